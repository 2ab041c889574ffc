"""Closed-loop load: N clients, each sending its next request as soon as the last one returns.

Measured like Triton's perf_analyzer: after a warm-up (left out where it would only repeat the first
window: warmup_repeats_the_first_window) and, for more than one client, an untimed first
round, time is cut into windows (each at least
`window_s` long and holding at least one completion per request that runs at once: one per client, or
one per slot where clients queue first come first served on shared runners, since there every
completion has waited behind all the other clients and is a whole sample) until the last three windows agree
within `stability_pct`. At `cell_cap_s` clients stop sending new requests and the requests still in
flight close the last window, so a slow cell (a big batch on eight clients can take seconds per
request) costs its measurement and nothing more.

The first round is not timed because the clients all send at once: the queue is still filling, so the
first of eight clients queued on two slots waits for nobody and the last for six, and their mean latency
reads about 40 % short (throughput, clients over mean latency, 1.6x high). From each client's second request
on, every request waits behind the others as it will for the rest of the cell; the cap's clock starts
once the first round is done.

Where the clients queue on shared runners, the caller's
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


def warmup_repeats_the_first_window(request_s: float, concurrency: int, settings: WindowSettings) -> bool:
    """Whether a warm-up request only repeats what the first window does: one client whose requests (about
    `request_s` each) are at least a window long, so that every window holds one request, and a fourth
    still starts before the cap. A cold first request that reads slow then makes its window disagree with
    the next ones, and the stability rule measures the fourth and takes its figures from the three after
    it; one that reads like the rest is one of them, within the rule. Where the cap would stop the fourth
    (batch 32 of an FP32 ResNet50 here: 1.4 s a request, a 4 s cap), a cold first request would leave the
    cell unstable, so it stays a warm-up."""
    return concurrency == 1 and request_s >= settings.window_s and 3 * request_s < settings.cell_cap_s


def measure_closed_loop(
    clients: list[Callable[[], object]],
    batch_size: int,
    settings: WindowSettings,
    warm: list[bool] | None = None,
    withdraw: Callable[[], None] = lambda: None,
    in_parallel: int | None = None,
) -> dict[str, float | int | bool]:
    """Drive every client callable (one request each call) concurrently; return the latency summary.

    `warm[i]` says client i's runner already ran this batch size, so it skips the warm-up requests.
    `withdraw` makes the requests still queued raise RequestWithdrawn (called at the cap and at the end).
    `in_parallel`: how many requests run at once where the clients queue on shared runners (None: all).
    """
    warm = warm or [False] * len(clients)
    per_window = min(in_parallel or len(clients), len(clients))
    completions: list[tuple[float, float]] = []  # (end, latency)
    # The main thread sleeps on this instead of polling: a poll loop steals CPU from the runtime it measures.
    progress = threading.Condition()
    errors: list[BaseException] = []
    stop = threading.Event()
    deadline = [math.inf]  # set once the warm-up and the first round are over
    running = [len(clients)]
    untimed_first = len(clients) > 1
    first_round = [len(clients) if untimed_first else 0]  # clients whose first request is still running
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
            first = untimed_first
            while not stop.is_set() and not errors:
                start = time.perf_counter()
                request()
                end = time.perf_counter()
                with progress:
                    if first:
                        first = False
                        first_round[0] -= 1
                    else:
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
    with progress:
        progress.wait_for(lambda: errors or not first_round[0] or not running[0])
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
                window_full = lambda: errors or len(unassigned) + len(completions) - seen >= per_window or not running[0]
                if capped:
                    progress.wait_for(window_full)
                elif not progress.wait_for(window_full, timeout=max(0.0, deadline[0] - time.perf_counter())):
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
