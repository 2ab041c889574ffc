"""What every stage script shares: logging, JSON written atomically and read back, and a user error (or a
missing ONNX Runtime) turned into one line on stderr and exit status 1."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

from crossdeploy.atomic import atomic_path
from crossdeploy.errors import CrossdeployError
from crossdeploy.params import load_params
from crossdeploy.resources import TreePeak, stage_resources

ONNXRUNTIME_MISSING = (
    "ONNX Runtime is not installed: install crossdeploy with the cpu extra (pip install -e '.[cpu]'), "
    "or on a GPU machine with the gpu extra (README, GPU)."
)


def stage_name(main: Callable[[], None]) -> str | None:
    """The dvc.yaml stage `main` belongs to, for a script run as `python -m stages.<name>` (every stage's
    cmd); None when called otherwise (a test), which then records no resources."""
    spec = getattr(sys.modules.get(main.__module__), "__spec__", None)
    package, _, name = (spec.name if spec else "").rpartition(".")
    return name if package == "stages" else None


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's main; on success record its wall time and peak RSS in `paths.resources.<stage>`."""
    logging.basicConfig(level=os.environ.get("CROSSDEPLOY_LOG", "INFO"), format="%(levelname)s %(name)s: %(message)s")
    started = time.perf_counter()
    stage = stage_name(main)
    tree = TreePeak() if stage else None
    try:
        main()
        if stage:
            write_json(load_params()["paths"]["resources"][stage], stage_resources(started, tree))
        if stage and main.__module__ == "__main__":  # run as the process (python -m), not imported by a caller
            exit_without_teardown()
    except CrossdeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except ModuleNotFoundError as exc:
        if exc.name != "onnxruntime":
            raise
        # it comes from one of two extras, never the base install (pyproject.toml says why)
        print(f"error: {ONNXRUNTIME_MISSING}", file=sys.stderr)
        sys.exit(1)


def exit_without_teardown() -> None:
    """End a finished stage's process now: exit handlers run and output is flushed, but the interpreter's
    teardown is skipped. Tearing down TensorFlow's and PyTorch's modules and freeing their memory object
    by object takes 1 to 3 s after every stage that loaded them (15 s of the default `dvc repro`), and
    the kernel frees the process's memory at once. Every output was written and closed before this.
    Threads still running are not joined (concurrent.futures' exit hook is part of the teardown): a stage
    joins its own before it returns."""
    import atexit

    atexit._run_exitfuncs()  # multiprocessing's children joined, weakref finalizers (temporary directories) run
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def write_json(path: str | Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())
