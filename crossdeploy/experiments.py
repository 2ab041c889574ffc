"""Queued DVC experiments, as the experiment scripts (support_matrix.py, cost_growth.py) drive them: queue,
wait with one worker, and read a file back from each finished experiment's Git ref."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any


def dvc(*args: str, check: bool = True) -> str:
    result = subprocess.run(["dvc", *args], capture_output=True, text=True)
    if check and result.returncode:
        raise SystemExit(f"dvc {' '.join(args)} failed: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


def exp_refs(prefix: str) -> dict[str, str]:
    """Experiment name -> its Git ref, for the experiments named `prefix...`."""
    refs = subprocess.run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], capture_output=True, text=True, check=True)
    return {ref.rsplit("/", 1)[1]: ref for ref in refs.stdout.split() if ref.rsplit("/", 1)[1].startswith(prefix)}


def queue_states(prefix: str) -> dict[str, str]:
    """Experiment name -> Queued, Running, Success or Failed, from `dvc queue status`."""
    states = {}
    for line in dvc("queue", "status").splitlines():
        fields = line.split()
        names = [f for f in fields if f.startswith(prefix)]
        if names and fields[-1] in ("Queued", "Running", "Success", "Failed"):
            states[names[0]] = fields[-1]
    return states


def run_queued(prefix: str) -> None:
    """Run what is queued with one worker (the figures are wall times: never two at once) and wait for `prefix...`."""
    dvc("queue", "start", "-j", "1")
    wait(prefix)


def wait(prefix: str, poll_s: float = 30.0) -> None:
    while any(state in ("Queued", "Running") for state in queue_states(prefix).values()):
        time.sleep(poll_s)


def git_show(ref: str, path: str) -> str | None:
    result = subprocess.run(["git", "show", f"{ref}:{path}"], capture_output=True, text=True)
    return result.stdout if result.returncode == 0 else None


def failure_from_log(name: str, before: str) -> str:
    """The stage's one-line error (run_stage prints `error: ...`) from the experiment's log."""
    log = dvc("queue", "logs", name, check=False)
    errors = [line.strip() for line in log.splitlines() if line.strip().startswith(("error:", "ERROR:"))]
    return errors[-1] if errors else f"the experiment failed before {before}; see `dvc queue logs {name}`"


def finished_at(ref: str) -> int:
    return int(subprocess.run(["git", "log", "-1", "--format=%ct", ref], capture_output=True, text=True, check=True).stdout)


def publish(output: Path, data: dict[str, Any], table: str, readme: Path, markers: tuple[str, str]) -> None:
    """`output`.json and .md, and the markdown table in the README between `markers` (when it has them)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(data, indent=2) + "\n")
    output.with_suffix(".md").write_text(table)
    text = readme.read_text()
    start, end = text.find(markers[0]), text.find(markers[1])
    if start >= 0 and end > start:
        readme.write_text(text[: start + len(markers[0])] + "\n" + table + text[end:])

