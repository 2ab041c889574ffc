"""What every stage script shares: logging, JSON written atomically and read back, and a user error (or a
missing ONNX Runtime) turned into one line on stderr and exit status 1."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable

from crossdeploy.atomic import atomic_path
from crossdeploy.errors import CrossdeployError


ONNXRUNTIME_MISSING = (
    "ONNX Runtime is not installed: install crossdeploy with the cpu extra (pip install -e '.[cpu]'), "
    "or on a GPU machine with the gpu extra (README, GPU)."
)


def run_stage(main: Callable[[], None]) -> None:
    logging.basicConfig(level=os.environ.get("CROSSDEPLOY_LOG", "INFO"), format="%(levelname)s %(name)s: %(message)s")
    try:
        main()
    except CrossdeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except ModuleNotFoundError as exc:
        if exc.name != "onnxruntime":
            raise
        # it comes from one of two extras, never the base install (pyproject.toml says why)
        print(f"error: {ONNXRUNTIME_MISSING}", file=sys.stderr)
        sys.exit(1)


def write_json(path: str | Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())
