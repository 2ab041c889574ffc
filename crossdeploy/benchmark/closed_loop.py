"""Closed-loop load: N clients, each sending its next request as soon as the last one returns.

Measured like Triton's perf_analyzer: after a warm-up, time is cut into windows (each at least
`window_s` long and holding at least one completion per client) until the last three windows agree
within `stability_pct`. At `cell_cap_s` clients stop sending new requests and the requests still in
flight close the last window, so a slow cell (a big batch on eight clients can take seconds per
request) costs its measurement and nothing more. Where the clients queue on shared runners, the caller's
`withdraw` takes back the requests that have not started once the figures are taken (at the cap, or
when the windows agree): waiting for them would add seconds and no figure.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Callable

from crossdeploy.benchmark.statistics import Window, is_stable, summarize


class RequestWithdrawn(Exception):
    """Raised by a queued request that was taken back before it started: the client stops, unmeasured."""


@dataclass(frozen=True)
class WindowSettings:
    warmup_requests: int  # per client whose runner has not yet run this batch size; not measured
    window_s: float
    max_windows: int
    stability_pct: float
    cell_cap_s: float  # after this much measuring, clients finish their request in flight and stop


def measure_closed_loop(
    clients: list[Callable[[], object]],
    batch_size: int,
    settings: WindowSettings,
    warm: list[bool] | None = None,
    withdraw: Callable[[], None] = lambda: None,
) -> dict[str, float | int | bool]:
    """Drive every client callable (one request each call) concurrently; return the latency summary.

    `warm[i]` says client i's runner already ran this batch size, so it skips the warm-up requests.
    `withdraw` makes the requests still queued raise RequestWithdrawn (called at the cap and at the end).
    """
    warm = warm or [False] * len(clients)
    completions: list[tuple[float, float]] = []  # (end, latency)
    # The main thread sleeps on this instead of polling: a poll loop steals CPU from the runtime it measures.
    progress = threading.Condition()
    errors: list[BaseException] = []
    stop = threading.Event()
    deadline = [math.inf]  # set once the warm-up is over
    running = [len(clients)]
    warmed = threading.Barrier(len(clients) + 1)

    def client_loop(request: Callable[[], object], is_warm: bool) -> None:
        try:
            for _ in range(0 if is_warm else settings.warmup_requests):
                request()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            warmed.wait()
        try:
            while not stop.is_set() and not errors:
                start = time.perf_counter()
                request()
                end = time.perf_counter()
                with progress:
                    completions.append((end, end - start))
                    progress.notify()
                if end >= deadline[0]:
                    return
        except RequestWithdrawn:
            pass
        except BaseException as exc:
            errors.append(exc)
        finally:
            with progress:
                running[0] -= 1
                progress.notify()

    threads = [threading.Thread(target=client_loop, args=(c, w), daemon=True) for c, w in zip(clients, warm)]
    for thread in threads:
        thread.start()
    warmed.wait()
    measure_start = time.perf_counter()
    deadline[0] = measure_start + settings.cell_cap_s
    windows: list[Window] = []
    unassigned: list[tuple[float, float]] = []
    seen = 0
    capped = False
    try:
        while True:
            time.sleep(settings.window_s)
            with progress:
                window_full = lambda: errors or len(unassigned) + len(completions) - seen >= len(clients) or not running[0]
                if not capped and not progress.wait_for(window_full, timeout=max(0.0, deadline[0] - time.perf_counter())):
                    capped = True
                    withdraw()  # after the cap only the requests already running count
                    progress.wait_for(window_full)
                if errors:
                    raise errors[0]
                finished = not running[0]
                now = time.perf_counter()
                fresh = completions[seen:]
            seen += len(fresh)
            unassigned += fresh
            # once every client has stopped, the window ends at the last completion, not at an idle tail
            end = max(c[0] for c in unassigned) + 1e-9 if finished and unassigned else now
            windows.append(Window(tuple(lat for done, lat in unassigned if done < end), batch_size, len(clients)))
            unassigned = [c for c in unassigned if c[0] >= end]
            if is_stable(windows, settings.stability_pct):
                return summarize(windows, stable=True)
            if finished or len(windows) >= settings.max_windows:
                return summarize(windows, stable=False)
    finally:
        stop.set()
        withdraw()
        for thread in threads:
            thread.join()

