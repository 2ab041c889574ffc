"""Runtime wrappers behind one interface (see base.Runner). Each module imports its framework lazily."""

from crossdeploy.runtimes.base import Runner, RuntimeUnavailable, ThreadSettings

__all__ = ["Runner", "RuntimeUnavailable", "ThreadSettings"]
