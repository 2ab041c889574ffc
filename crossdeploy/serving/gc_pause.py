"""Python's cyclic garbage collector held off while a request body is parsed.

A batch of 32 float images in JSON parses into 1.6 M lists and 4.8 M floats. Every 700 new lists start
a collection, and the older generations' collections walk everything alive: in a server that has
imported TensorFlow, that is millions of objects. Measured on a 2-core machine, orjson took 1.5 to 2.2 s
to parse such a body there, and 0.36 s with the collector held off. The parsed tree holds no cycles, and
it is freed by reference counting once its arrays are built, so holding the collector off loses nothing.

The collector is process-wide and requests parse on several threads at once, so the pause is counted:
the collector runs again when the last parse in progress ends. Under load that never leaves a moment
without a parse, cyclic garbage made meanwhile (by the server's other work) would pile up; so once the
collector has been held off `max_pause_s` without a break, further parses run with it on. The bound is
checked as each parse starts, so the collector may stay off `max_pause_s` plus one parse (which the body
size limit bounds). A collector the process turns off itself while a parse is inside is turned back on
when the parse ends; a collector off before the first parse began stays off.
"""

from __future__ import annotations

import gc
import threading
import time

#: the longest the collector stays off while parses overlap without a break
MAX_PAUSE_S = 5.0


class GcPause:
    """A context manager, shared by the threads that parse: the collector is off while any of them is inside."""

    def __init__(self, max_pause_s: float = MAX_PAUSE_S):
        self.max_pause_s = max_pause_s
        self._lock = threading.Lock()
        self._inside = 0
        self._since = 0.0  # when the current run of overlapping parses began
        self._restore = True  # whether the collector was on before the run began

    def __enter__(self) -> None:
        with self._lock:
            if self._inside == 0:
                self._since, self._restore = time.monotonic(), gc.isenabled()
            self._inside += 1
            if not self._restore:
                return  # the process turned the collector off itself: not ours to turn on
            if time.monotonic() - self._since <= self.max_pause_s:
                gc.disable()
            else:
                gc.enable()

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            self._inside -= 1
            if self._inside == 0 and self._restore:
                gc.enable()
