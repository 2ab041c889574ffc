"""A named baseline's benchmark (a commit, tag, branch or `dvc exp` name), read from Git without
checking it out, for the report to compare with."""

from __future__ import annotations

import json
from typing import Any

from crossdeploy.errors import CrossdeployError


def load_baseline(rev: str, path: str, repo_root: str = ".") -> tuple[str, dict[str, Any]]:
    """(resolved commit, the metrics file at that revision)."""
    from dvc.scm import SCM, RevError, resolve_rev

    scm = SCM(repo_root)
    try:
        commit = resolve_rev(scm, rev)
    except RevError:
        raise CrossdeployError(
            f"benchmark.baseline {rev!r} is not a commit, tag, branch or experiment here; "
            "name one from `git log` or `dvc exp show`, or set it to null."
        ) from None
    try:
        return commit, json.loads(scm.get_fs(commit).read_text(path))
    except FileNotFoundError:
        raise CrossdeployError(
            f"benchmark.baseline {rev!r} ({commit[:7]}) has no {path}; pick a revision that ran the benchmark."
        ) from None
