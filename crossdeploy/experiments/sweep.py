"""Queued DVC experiments, one per architecture, as the experiment scripts (support_matrix.py,
cost_growth.py) drive them: queue, run with one worker (the figures are wall times: never two at once),
read each finished experiment's files back from its Git ref, and publish the table (Sweep)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable


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
    """`output`.json and .md, and the markdown table in the page `readme` between `markers` (when it has them)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(data, indent=2) + "\n")
    output.with_suffix(".md").write_text(table)
    text = readme.read_text()
    start, end = text.find(markers[0]), text.find(markers[1])
    if start >= 0 and end > start:
        readme.write_text(text[: start + len(markers[0])] + "\n" + table + text[end:])


@dataclass(frozen=True)
class Sweep:
    """One experiment per architecture, named `prefix<arch>`: `dvc exp run --queue -S model.arch=<arch>
    -S validate.strict=false` (strict off so that a variant whose parity fails on another architecture still
    lets the run record its files: DVC keeps nothing of a failed experiment), then `args` (its own -S
    flags, or the stage it runs up to)."""

    prefix: str
    architectures: tuple[str, ...]
    output: Path  # metrics/<name>: .json and .md
    markers: tuple[str, str]  # where the table goes in `readme`
    args: tuple[str, ...] = ()
    readme: Path = Path("docs/experiments.md")  # the docs page that holds both sweeps' markers

    def queue(self, architectures: list[str], force: bool = False) -> None:
        existing = [name for name in exp_refs(self.prefix) if name[len(self.prefix) :] in architectures]
        if existing:  # a re-run replaces the previous sweep's experiments
            dvc("exp", "remove", *existing)
        for arch in architectures:
            dvc(
                "exp",
                "run",
                "--queue",
                *(["-f"] if force else []),
                "-n",
                f"{self.prefix}{arch}",
                "-S",
                f"model.arch={arch}",
                "-S",
                "validate.strict=false",
                *self.args,
            )

    def finished(self, architectures: list[str], path: str, failed_before: str) -> dict[str, tuple[str | None, str]]:
        """arch -> (the experiment's Git ref, "ok") where it wrote `path`, else (None, why not: its state, or
        a failed run's one-line error)."""
        refs, states = exp_refs(self.prefix), queue_states(self.prefix)
        found = {}
        for arch in architectures:
            name = f"{self.prefix}{arch}"
            if name in refs and git_show(refs[name], path) is not None:
                found[arch] = (refs[name], "ok")
                continue
            state = states.get(name, "not run")
            found[arch] = (None, failure_from_log(name, failed_before) if state == "Failed" else f"experiment {state.lower()}")
        return found

    def main(
        self,
        argv: list[str],
        collect: Callable[[list[str]], dict[str, Any]],
        markdown: Callable[[dict[str, Any]], str],
        extra: Callable[[dict[str, Any]], dict[str, Any]] = lambda result: {},
    ) -> None:
        """`run [--force] [ARCH ...]` queues and runs the sweep, then tabulates; `table [ARCH ...]` tabulates
        what has run. `extra` adds to the JSON what the table was computed from."""
        command, rest = (argv[0] if argv else "table"), argv[1:]
        architectures = [a for a in rest if a != "--force"] or list(self.architectures)
        if command == "run":
            self.queue(architectures, force="--force" in rest)
            run_queued(self.prefix)
        elif command != "table":
            raise SystemExit(sys.modules["__main__"].__doc__)
        result = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "machine": machine_words(), "rows": collect(architectures)}
        text = markdown(result)
        publish(self.output, {**result, **extra(result)}, text, self.readme, self.markers)
        print(text)


def machine_words() -> str:
    """The machine a sweep ran on, as its table says it: CPU and cores, and the GPUs or none."""
    from crossdeploy.device_info import describe_device

    device = describe_device()
    return f"{device['cpu']} CPU, {device['usable_cores']} cores, " + (f"{device['gpus']}" if device["gpus"] else "no GPU")
