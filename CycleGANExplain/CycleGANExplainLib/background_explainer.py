"""Explanations off the GUI thread: the latest request runs in a worker, the GUI thread polls.

The Slicer module reads the scene and writes the overlay on the GUI thread (MRML is not
thread-safe) and runs ``mrml_explain.compute`` here, in one worker thread, so that Slicer never
freezes, whatever the method (occlusion takes seconds). Qt-free, so it is tested headless: the
module calls ``poll`` from a QTimer; a test calls it in a loop.

- A request made while one runs supersedes any request still waiting: only the latest waits.
- ``cancel`` drops the waiting request and discards the running one's result when it arrives
  (torch cannot be interrupted mid-call; the user is free at once all the same).
- Results and errors are delivered by ``poll``, on the thread that calls it, never on the worker.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any, Callable, Optional

Done = Callable[[Any, Any], None]  # (request, result)
Failed = Callable[[Any, BaseException], None]  # (request, error)


class BackgroundExplainer:
    def __init__(self, compute: Callable[[Any], Any], on_done: Done, on_error: Failed,
                 executor: Optional[concurrent.futures.Executor] = None) -> None:
        self._compute = compute
        self._on_done = on_done
        self._on_error = on_error
        self._executor = executor or concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="explain")
        self._running: Optional[concurrent.futures.Future] = None
        self._running_request: Any = None
        self._running_cancelled = False
        self._waiting: Any = None
        self._has_waiting = False

    @property
    def busy(self) -> bool:
        """Whether a request runs or waits (its result not yet delivered or discarded)."""
        return self._running is not None or self._has_waiting

    def submit(self, request: Any) -> None:
        """Run ``request`` now, or as soon as the running one ends, replacing any waiting one."""
        if self._running is None:
            self._start(request)
        else:
            self._waiting, self._has_waiting = request, True

    def cancel(self) -> None:
        """Forget the waiting request, and the running one's result."""
        self._waiting, self._has_waiting = None, False
        if self._running is not None:
            self._running_cancelled = True

    def poll(self) -> None:
        """Deliver a finished result or error (unless cancelled or superseded) and start the
        waiting request; call it from the GUI thread, regularly while ``busy``."""
        if self._running is None or not self._running.done():
            return
        future, request, cancelled = self._running, self._running_request, self._running_cancelled
        self._running, self._running_request, self._running_cancelled = None, None, False
        if not (cancelled or self._has_waiting):  # a waiting request is newer: this result is stale
            error = future.exception()
            if error is not None:
                self._on_error(request, error)
            else:
                self._on_done(request, future.result())
        if self._has_waiting:
            waiting, self._waiting, self._has_waiting = self._waiting, None, False
            self._start(waiting)

    def shutdown(self) -> None:
        """Stop taking work; a running computation finishes in the background and is discarded."""
        self.cancel()
        self._executor.shutdown(wait=False)

    def _start(self, request: Any) -> None:
        self._running_request = request
        self._running_cancelled = False
        self._running = self._executor.submit(self._compute, request)
