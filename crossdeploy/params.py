"""Read the composed params.yaml that DVC tracks (Hydra composes it from conf/ for `dvc exp run`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from crossdeploy.errors import CrossdeployError

PARAMS_FILE = Path("params.yaml")


def load_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CrossdeployError(f"{path} not found: run the stage from the repository root, where params.yaml lives.")
    with path.open() as f:
        return yaml.safe_load(f) or {}


def check_input_dep(params: dict[str, Any], param: str, dep: str, fallback: str) -> None:
    """Stop when params.yaml names a user file that DVC does not hash as a dep: then overwriting that
    file would re-run nothing. conf/ derives `paths.inputs.*` from the param; a hand edit of
    params.yaml can leave them apart."""
    section, key = param.split(".")
    value = params[section].get(key)
    expected = fallback if value is None else str(value)
    declared = params["paths"].get("inputs", {}).get(dep)
    if declared != expected:
        raise CrossdeployError(
            f"params.yaml sets {param}: {value} but paths.inputs.{dep}: {declared}, so DVC would not notice a change "
            f"to that file; set {param} in conf/ and run `python -m crossdeploy.compose`, or use `dvc exp run -S {param}=...`."
        )
