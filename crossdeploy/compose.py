"""Compose params.yaml from conf/ with Hydra, the way `dvc exp run` does when hydra is enabled.

python -m crossdeploy.compose [override ...]    e.g.  model=resnet18-tiny data.evaluation_size=16
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import yaml

CONFIG_DIR = Path("conf")
CONFIG_NAME = "config"


def _first_set(value: Any, fallback: str) -> Any:
    return fallback if value is None else value


def default_model_name(arch: str, checkpoint: str | None) -> str:
    """The served model's name when `model.name` is not set: the checkpoint's file stem, else the
    architecture, as a DNS label (lowercase letters, digits and '-', starting with a letter), which is
    what a KServe InferenceService needs and a TF Serving URL takes as is: mobilenet_v3_large ->
    mobilenet-v3-large."""
    stem = Path(str(checkpoint)).stem if checkpoint else str(arch)
    label = re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-")
    if not label or not label[0].isalpha():
        label = f"model-{label}".rstrip("-")
    # 63 characters per DNS label, less "-tensorrt" for the Triton service named after it
    return label[:54].rstrip("-")


def register_resolvers() -> None:
    """`${first_set:${model.checkpoint},stages/model.py}`: DVC cannot template a dependency from a
    param that may be null, so conf/ names a file that always exists (the stage's own script, already
    a dependency) when the user gave none. `${model_name:${model.arch},${model.checkpoint}}`: the
    served name follows the model unless `model.name` is set. `dvc exp run` loads this through
    hydra_plugins/."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("first_set"):
        OmegaConf.register_new_resolver("first_set", _first_set)
    if not OmegaConf.has_resolver("model_name"):
        OmegaConf.register_new_resolver("model_name", default_model_name)


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
