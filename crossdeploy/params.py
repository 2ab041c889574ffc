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
