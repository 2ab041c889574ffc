"""Registers crossdeploy's OmegaConf resolvers when `dvc exp run` composes params.yaml: DVC imports
every module under hydra_plugins/ (its `hydra.plugins_path`, the repository root) before composing."""

from crossdeploy.compose import register_resolvers

register_resolvers()
