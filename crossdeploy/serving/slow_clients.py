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

REQUEST_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s"


class ArrivalDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with two timers: while no request is arriving (`idle_timeout_s`, from the
    connection's opening and from each answer's end) and from a request's first byte to its last
    (`arrival_timeout_s`). Set both on a subclass (`arrival_deadline`)."""

    idle_timeout_s: float = 5.0
    arrival_timeout_s: float = 30.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arrival: asyncio.TimerHandle | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._head_done = False  # the arriving request's head is complete (its handler may be running)
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        # the parser saw the request's first byte (pipelined requests each begin here); blank lines between
        # requests never get here, so they do not stop the idle timer either
        self._cancel_timers()
        self._head_done = False
        self._arrival = self.loop.call_later(self.arrival_timeout_s, self._drop, "arrival")
        super().on_message_begin()
        self.scope["state"][FIRST_BYTE] = self.loop.time()

    def on_headers_complete(self) -> None:
        self._head_done = True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._cancel_timers()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # idle again once the latest request is answered (a pipelined one may have just started) and no other
        # is arriving; beside uvicorn's keep-alive timer, which any byte (a bare CRLF) cancels
        latest_answered = self.cycle is None or self.cycle.response_complete
        if latest_answered and self._arrival is None and not self.transport.is_closing():
            self._arm_idle()

    def _arm_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self._idle = self.loop.call_later(self.idle_timeout_s, self._drop, "idle")

    def _cancel_timers(self) -> None:
        for timer in (getattr(self, "_idle", None), getattr(self, "_arrival", None)):
            if timer is not None:
                timer.cancel()
        self._idle = self._arrival = None

    def _server_is_waiting(self) -> bool:
        """The rest of the request is late because of the server: it stopped reading (a request waiting for a
        turn) or has not yet sent the 100 Continue the client waits for."""
        cycle = self.cycle
        return self.flow.read_paused or (self._head_done and cycle is not None and cycle.waiting_for_100_continue)

    def _drop(self, why: str) -> None:
        if self.transport.is_closing():
            return
        if why == "arrival" and self._server_is_waiting():
            # its handler answers it in time (504, from the same first byte); closed if it outlives another deadline
            self._arrival = self.loop.call_later(self.arrival_timeout_s, self._drop, "stalled")
            return
        cycle = self.cycle
        # a 408 only where the client would read it as the answer to the late request: no earlier request on
        # this connection is still unanswered or half-answered, and none is queued behind
        answerable = not self.pipeline and (cycle is None or cycle.response_complete or (self._head_done and not cycle.response_started))
        if why != "idle" and answerable:
            message = (
                b'{"error": "the request did not arrive in full within %g s of its first byte (serve.request_timeout_s)."}'
                % self.arrival_timeout_s
            )
            self.transport.write(REQUEST_TIMEOUT % (len(message), message))
        for waiting in [cycle, *(queued for queued, _ in self.pipeline)]:
            if waiting is not None and not waiting.response_complete:
                # the handler's receive() hears the client is gone, and whatever it answers goes nowhere
                waiting.disconnected = True
                waiting.message_event.set()
        # a client that stops reading would hold close() until its unread answer drains: cut it instead
        if self.transport.get_write_buffer_size() > 0 and why == "idle":
            self.transport.abort()
        else:
            self.transport.close()


def arrival_deadline(arrival_timeout_s: float, idle_timeout_s: float) -> type[ArrivalDeadlineProtocol]:
    """The protocol class for uvicorn's `http=` setting with these limits."""
    return type(
        "ArrivalDeadline",
        (ArrivalDeadlineProtocol,),
        {"arrival_timeout_s": float(arrival_timeout_s), "idle_timeout_s": float(idle_timeout_s)},
    )
