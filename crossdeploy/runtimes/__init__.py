"""Runtime wrappers behind one interface (see base.Runner). Each module imports its framework lazily."""

from crossdeploy.runtimes.base import Runner, ThreadSettings

__all__ = ["Runner", "ThreadSettings"]
