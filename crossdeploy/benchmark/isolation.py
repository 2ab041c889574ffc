"""A function run in a process of its own, spawned (a fresh interpreter that inherits no runtime's state),
whose progress comes back as events while it runs.

The benchmark measures each variant this way. When the process ends, the system takes back all its
runtime held: TensorFlow keeps about 1.8 GB after a SavedModel is closed and the allocators of ONNX
Runtime and PyTorch keep their high-water marks, so in one process the benchmark's peak grew with every
variant measured. And a runtime that crashes natively (a segfault, an abort, the kernel's out-of-memory
killer) ends only its own process: what it measured before is kept and the next variant is measured.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
from typing import Any, Callable

from crossdeploy.runtimes.base import error_text

log = logging.getLogger(__name__)


class ProcessEnded(RuntimeError):
    """The isolated function did not finish: its process died, or it raised (the message says which)."""


def run_isolated(function: Callable[..., None], args: tuple, on_event: Callable[[Any], None]) -> None:
    """Call `function(*args, report)` in a spawned process; each `report(event)` there calls `on_event(event)`
    here, in order. Raises ProcessEnded if the function raised or its process died before it returned.
    Everything it passes must pickle."""
    context = multiprocessing.get_context("spawn")
    args_in, args_out = context.Pipe(duplex=False)
    events_in, events_out = context.Pipe(duplex=False)
    # the arguments (the evaluation images: tens of MB) go through a pipe of their own, not the spawn
    # payload: multiprocessing keeps the reading end of that one open while it writes, so a child that
    # dies while starting up would leave this process blocked on a full pipe for ever
    process = context.Process(target=_child, args=(function, args_in, events_out), name=getattr(function, "__name__", "isolated"))
    process.start()
    args_in.close()  # the child's ends only: with them closed here, a dead child reads as a broken pipe or EOF
    events_out.close()
    try:
        try:
            args_out.send(args)
        except (BrokenPipeError, ConnectionResetError):
            pass  # it died before reading them; the events pipe's EOF below says how it ended
        finally:
            args_out.close()
        while True:
            try:
                kind, payload = events_in.recv()
            except EOFError:
                process.join()
                raise ProcessEnded(f"its process ended with {exit_text(process.exitcode)} before it was done") from None
            if kind == _RETURNED:
                return
            if kind == _RAISED:
                raise ProcessEnded(payload)
            on_event(payload)
    finally:
        events_in.close()
        process.join(timeout=60)
        if process.is_alive():  # the caller was interrupted, or the child hangs on its way out
            process.kill()
            process.join()


_EVENT, _RETURNED, _RAISED = "event", "returned", "raised"


def _child(function: Callable[..., None], args_in, events_out) -> None:
    logging.basicConfig(level=os.environ.get("CROSSDEPLOY_LOG", "INFO"), format="%(levelname)s %(name)s: %(message)s")

    def report(event: Any) -> None:
        events_out.send((_EVENT, event))

    try:
        args = args_in.recv()
        args_in.close()
        function(*args, report)
    except BaseException as exc:
        log.exception("%s raised", getattr(function, "__name__", function))
        events_out.send((_RAISED, error_text(exc)))
    else:
        events_out.send((_RETURNED, None))
    finally:
        events_out.close()


def exit_text(code: int | None) -> str:
    """How a process ended, for a reason: its exit code, or the signal that killed it and what sends it."""
    if code is None or code >= 0:
        return f"exit code {code}"
    number = -code
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"signal {number}"
    why = {
        "SIGKILL": ": the kernel's out-of-memory killer sends it, among others",
        "SIGSEGV": ": a native crash in a runtime",
        "SIGABRT": ": a native runtime aborted",
    }.get(name, "")
    return f"signal {number} ({name}{why})"
