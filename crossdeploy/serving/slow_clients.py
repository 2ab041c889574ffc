"""Slow and idle clients cannot hold the embedded server: uvicorn times out only the gap between two
requests (its keep-alive), so a client that opens a connection and sends nothing, or sends its request
line, headers or body a byte at a time (slowloris), holds a connection slot for as long as it likes and
a few such clients hold every slot. The protocol below closes a connection that sends nothing within the
keep-alive time of opening, and one whose request has not fully arrived (head and body) within
`serve.request_timeout_s` of its first byte, as nginx's client_header_timeout and client_body_timeout do.

A body the server itself stopped reading is not the client's fault: uvicorn pauses reading past 64 kB
until the handler asks for more, and a request waiting for a turn (kserve_server.Admission) does not ask.
Such a request is timed by its handler instead, from the same first byte (FIRST_BYTE in the request's
state), and answered 504; the connection is still closed if it outlives a second deadline.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: the request's state key (request.state in Starlette) holding the event loop's time of its first byte
FIRST_BYTE = "first_byte"

REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s"
)


class ArrivalDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with two timers: before the first byte (`idle_timeout_s`) and from a
    request's first byte to its last (`arrival_timeout_s`). Set both on a subclass (`arrival_deadline`)."""

    idle_timeout_s: float = 5.0
    arrival_timeout_s: float = 30.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arrival: asyncio.TimerHandle | None = None
        self._idle: asyncio.TimerHandle | None = self.loop.call_later(self.idle_timeout_s, self._drop, "idle")

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        # the parser saw the request's first byte (pipelined requests each begin here)
        self._cancel_timers()
        self._arrival = self.loop.call_later(self.arrival_timeout_s, self._drop, "arrival")
        super().on_message_begin()
        self.scope["state"][FIRST_BYTE] = self.loop.time()

    def on_message_complete(self) -> None:
        self._cancel_timers()
        super().on_message_complete()

    def _cancel_timers(self) -> None:
        for timer in (getattr(self, "_idle", None), getattr(self, "_arrival", None)):
            if timer is not None:
                timer.cancel()
        self._idle = self._arrival = None

    def _drop(self, why: str) -> None:
        if self.transport.is_closing():
            return
        if why == "arrival" and self.flow.read_paused:
            # the server stopped reading (a request waiting for a turn): its handler answers it in time
            self._arrival = self.loop.call_later(self.arrival_timeout_s, self._drop, "stalled")
            return
        # a 408 where no answer has begun on this connection (the head had not arrived, or the body of a
        # request whose handler has not answered yet); then the connection closes, and a handler waiting
        # for the rest of the body hears that the client is gone
        if why != "idle" and (self.cycle is None or not self.cycle.response_started):
            message = (
                b'{"error": "the request did not arrive in full within %g s of its first byte (serve.request_timeout_s)."}'
                % self.arrival_timeout_s
            )
            self.transport.write(REQUEST_TIMEOUT % (len(message), message))
        if self.cycle is not None and not self.cycle.response_complete:
            # the handler's receive() hears the client is gone, and whatever it answers goes nowhere
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self.transport.close()


def arrival_deadline(arrival_timeout_s: float, idle_timeout_s: float) -> type[ArrivalDeadlineProtocol]:
    """The protocol class for uvicorn's `http=` setting with these limits."""
    return type(
        "ArrivalDeadline", (ArrivalDeadlineProtocol,), {"arrival_timeout_s": float(arrival_timeout_s), "idle_timeout_s": float(idle_timeout_s)}
    )
