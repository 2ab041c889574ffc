"""One server for the rows that serve the same model: within a `SharedServers` scope a served runner
leaves its server running when it closes, and the next runner that would start the same server
(engine, repository, model, device, params) takes it over instead of starting another.

A deployment serves a model's float and encoded-image signatures from one server, and starting one
costs seconds (TensorFlow's import and the SavedModel's load), so validate starts one per model, not
one per row. At most one server waits idle at a time: a runner that starts another stops it first.
A server lives no longer than the thread that started it (Linux's parent-death signal follows that
thread: server_process.py), so only that thread's runners may take it over: validate's served lane.
"""

from __future__ import annotations

from typing import Any, ClassVar


class SharedServers:
    _current: ClassVar[SharedServers | None] = None

    def __init__(self) -> None:
        self._idle: Any = None  # a started ServerProcess nobody uses
        self._outer: SharedServers | None = None

    @classmethod
    def current(cls) -> SharedServers | None:
        """The innermost open scope, or None: outside one, every runner starts and stops its own server."""
        return cls._current

    def __enter__(self) -> SharedServers:
        if SharedServers._current is self or self._outer is not None:
            raise RuntimeError("a SharedServers scope is entered once; open a new one")
        self._outer, SharedServers._current = SharedServers._current, self
        return self

    def __exit__(self, *exc_info: object) -> None:
        SharedServers._current = self._outer
        self.close_idle()

    def take(self, identity: tuple) -> Any:
        """The idle server with this identity, still running, or None (and any other idle server is stopped)."""
        server, self._idle = self._idle, None
        if server is not None and server.identity == identity and server.running():
            return server
        if server is not None:
            server.close()
        return None

    def keep(self, server: Any) -> None:
        """Leave a started server running for the next runner that needs it."""
        self.close_idle()
        self._idle = server

    def close_idle(self) -> None:
        server, self._idle = self._idle, None
        if server is not None:
            server.close()
