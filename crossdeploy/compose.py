"""Compose params.yaml from conf/ with Hydra, the way `dvc exp run` does when hydra is enabled.

    python -m crossdeploy.compose [override ...]    e.g.  model=resnet18-tiny data.evaluation_size=16
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

CONFIG_DIR = Path("conf")
CONFIG_NAME = "config"


def _first_set(value: Any, fallback: str) -> Any:
    return fallback if value is None else value


def register_resolvers() -> None:
    """`${first_set:${model.checkpoint},stages/model.py}`: DVC cannot template a dependency from a
    param that may be null, so conf/ names a file that always exists (the stage's own script, already
    a dependency) when the user gave none. `dvc exp run` loads this through hydra_plugins/."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("first_set"):
        OmegaConf.register_new_resolver("first_set", _first_set)


def compose(overrides: list[str] | None = None, config_dir: Path = CONFIG_DIR) -> dict[str, Any]:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    register_resolvers()
    with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base=None):
        cfg = hydra_compose(config_name=CONFIG_NAME, overrides=overrides or [])
    return OmegaConf.to_container(cfg, resolve=True)


def write_params(params: dict[str, Any], path: Path = Path("params.yaml")) -> None:
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def main(argv: list[str] | None = None) -> None:
    write_params(compose(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
