"""One variant's warm runners, opened once and reused by every cell, LoadGen scenario and the harness.

Clients beyond what the runtime can usefully run at once queue, first come first served, as they would on
a server. A runtime that serves one request at a time per instance (an interpreter holds its tensors, a
TensorRT context its stream) gets more instances for more clients, up to its `max_instances`; one that
takes concurrent calls runs at most `max_in_flight` of them. On the CPU both limits are one per core:
each call already spreads over every core, so more only hold more activations while waiting for the same
cores (eight ResNet50 TFLite interpreters at batch 32 were half of the benchmark's 7 GB peak; eight
concurrent ONNX Runtime calls at batch 32 added 3.7 GB).
"""

from __future__ import annotations

import gc
import threading

import numpy as np

from crossdeploy.benchmark.closed_loop import RequestWithdrawn
from crossdeploy.runtimes.base import Runner, ThreadSettings
from crossdeploy.variants import Variant


class QueuedRunner:
    """A runner that several clients share, running at most `slots` calls at once: each `infer` waits
    for the ones before it, first come first served. threading.Lock is not fair (the thread that releases
    it usually takes it again), so with it one client would run back to back while the others starve,
    and the closed loop's throughput (clients over mean latency, which assumes every client keeps one
    request in flight) would count the starved ones as served: 4 clients on one 20 ms interpreter read
    80 img/s where 50 is all there is."""

    def __init__(self, runner: Runner, slots: int = 1):
        self.runner = runner
        self.slots = slots
        self._turns = threading.Condition()
        self._next_ticket = 0
        self._admitted = 0  # tickets below it have started (or were withdrawn)
        self._running = 0
        self._withdrawn_below = 0

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self._in_turn(self.runner.infer, batch)

    def infer_prepared(self, prepared) -> np.ndarray:
        return self._in_turn(self.runner.infer_prepared, prepared)

    def _in_turn(self, call, argument) -> np.ndarray:
        with self._turns:
            ticket = self._next_ticket
            self._next_ticket += 1
            self._turns.wait_for(lambda: ticket < self._withdrawn_below or (ticket == self._admitted and self._running < self.slots))
            if ticket < self._withdrawn_below:
                raise RequestWithdrawn(f"{self.runner.name}: the measurement ended before this request started")
            self._admitted += 1
            self._running += 1
            self._turns.notify_all()
        try:
            return call(argument)
        finally:
            with self._turns:
                self._running -= 1
                self._turns.notify_all()

    def withdraw_waiting(self) -> None:
        """Every request still waiting for its turn raises RequestWithdrawn; those running finish. A
        closed loop that has its figures calls it, so that it does not wait for a queue of requests
        whose latencies it will never use (seconds each, for eight clients at batch 32)."""
        with self._turns:
            self._withdrawn_below = self._admitted = self._next_ticket
            self._turns.notify_all()

    def __getattr__(self, name: str):
        return getattr(self.runner, name)


class RunnerPool:
    """Runners of one variant: one shared by every client where the runtime takes concurrent calls (at
    most its max_in_flight at once), else up to the runtime's max_instances with clients queued on them."""

    def __init__(self, variant: Variant, threads: ThreadSettings):
        self.variant = variant
        self.threads = threads
        self._runners: list = []  # Runner, or QueuedRunner for a runtime that serves one call at a time
        self._warm: set[tuple[int, int]] = set()  # (runner index, batch size) already run
        self.opened = 0  # instances activated, for tests and the log

    def warm_flags(self, runners: list, batch_size: int) -> list[bool]:
        """Per client, whether its runner needs no warm-up at this batch size: it ran it before, or an
        earlier client in this list shares the runner and warms it up (the measurement starts only once
        every warm-up is done). Marks them all as having run it from now on."""
        flags = []
        for runner in runners:
            key = (self._index(runner), batch_size)
            flags.append(key in self._warm)
            self._warm.add(key)
        return flags

    def _index(self, runner) -> int:
        return next(i for i, r in enumerate(self._runners) if r is runner)

    def open(self, count: int) -> list:
        """A runner per client, `count` of them; the same instance appears more than once where clients share it."""
        if not self._runners:
            self._runners.append(self._activated())
        first = self._runners[0]
        if first.concurrent_infer:
            return [first] * count
        limit = min(count, first.max_instances or count)
        while len(self._runners) < limit:
            self._runners.append(self._activated())
        return [self._runners[i % limit] for i in range(count)]

    def _activated(self):
        runner = self.variant.runner(self.threads)
        runner.activate()
        self.opened += 1
        if not runner.concurrent_infer:
            return QueuedRunner(runner)
        return QueuedRunner(runner, runner.max_in_flight) if runner.max_in_flight else runner

    @staticmethod
    def in_parallel(runners: list) -> int:
        """How many of these clients' requests run at once: the slots of the queues they share, or all of them."""
        if not all(isinstance(r, QueuedRunner) for r in runners):
            return len(runners)
        return min(len(runners), sum(r.slots for r in {id(r): r for r in runners}.values()))

    def withdraw_waiting(self) -> None:
        """Withdraw the requests queued on every runner (QueuedRunner.withdraw_waiting)."""
        for runner in self._runners:
            if isinstance(runner, QueuedRunner):
                runner.withdraw_waiting()

    def close(self) -> None:
        for runner in self._runners:
            runner.deactivate()
        self._runners.clear()
        self._warm.clear()
        gc.collect()
