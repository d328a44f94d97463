"""The explanation process: a persistent Python process that keeps the bundle loaded and explains
one job at a time, started and fed by ``worker_client`` (the Slicer module's panel).

Why a process: inside Slicer, PythonQt keeps the GIL while the main thread idles in Qt's event
loop, so a worker thread in Slicer's process advances only while the main thread runs Python
(benchmarks/slicer_click_latency.py). Slicer's AI extensions run inference in a separate process
for the same reason. Everything process-wide that explaining does (OpenMP's wait policy, torch's
thread count, Triton's import guard, numpy's global RNG for GradientSHAP) happens here, not in
Slicer.

Protocol, over an authenticated ``multiprocessing.connection`` at the address the client gave
on stdin (this process listens, so the client's connecting never waits on a process start):

- client -> worker: ``(EXPLAIN, job_id, pickled Job)``, ``(CANCEL, job_id)``, ``(STOP,)``.
  The job is pickled on its own so that a job this Python cannot even unpickle (a package
  missing here) is answered as that job's failure.
- worker -> client: ``(DONE, job_id, ExplanationBatch)``, ``(FAILED, job_id, WorkerFailure)``,
  ``(CANCELLED, job_id)``; exactly one answer per job.
- A new job or a cancel interrupts the running job for real: ``ExplanationCancelled`` is raised in
  the job's thread at its next Python step (torch calls return within milliseconds here). The
  client kills the process if that does not happen within its grace period.
- stdin's end (the client closed it, or died) ends the process: no orphan outlives Slicer.

Only the standard library is imported at start, so that the process answers before numpy or
torch load (and reports their absence as a job's failure).
"""

from __future__ import annotations

import ctypes
import pickle
import queue
import sys
import threading
import traceback
from typing import Any, NamedTuple, Optional, Union

EXPLAIN, CANCEL, STOP = "explain", "cancel", "stop"
DONE, FAILED, CANCELLED = "done", "failed", "cancelled"


class Job(NamedTuple):
    """What one explanation needs, picklable: the voxels the patches sample (not the whole volume:
    ``patch_sampling.patch_region``), their IJK-to-RAS matrix, the seeds and the choices."""

    voxels: Any  # np.ndarray (slice, row, column)
    ijk_to_ras: Any  # np.ndarray 4x4
    seeds: Any  # np.ndarray [N, 3] RAS
    bundle_dir: Optional[str]
    device: str
    method: str
    allow_unknown_bundle: bool
    warn_outside: bool = True  # False for the slices of one nodule (nodule_stack warns once per nodule)


class WorkerFailure(NamedTuple):
    """An error of the worker, as text (its class may not be importable in the client: torch's)."""

    kind: str  # the exception's class, qualified
    message: str  # what the user reads
    details: str  # the traceback, for the log


class ExplanationCancelled(BaseException):
    """Raised inside a running job when a newer job or a cancel arrives (BaseException: no
    ``except Exception`` in a library swallows it)."""


def run_job(job: Job) -> Any:
    """Load the job's bundle (cached while its files do not change) and explain its seeds; returns
    the ExplanationBatch. The one implementation, in this process and in ``mrml_explain.compute``."""
    from .explanation import explain
    from .model_bundle import load_bundle

    bundle = load_bundle(job.bundle_dir, job.device, allow_unknown=job.allow_unknown_bundle)
    return explain(job.voxels, job.ijk_to_ras, job.seeds, bundle, method=job.method, warn_outside=job.warn_outside)


def describe_failure(error: BaseException) -> WorkerFailure:
    """The failure as the panel shows it: the error's own message; a missing package named."""
    kind = f"{type(error).__module__}.{type(error).__qualname__}"
    message = str(error) or type(error).__name__
    if isinstance(error, ImportError):
        missing = error.name or message
        message = (f"The explanation process ({sys.executable}) cannot import {missing}: {message}. "
                   "Install the package into Slicer's Python (or restart Slicer after installing it).")
    elif kind == "torch.OutOfMemoryError" or kind.endswith("cuda.OutOfMemoryError"):
        message = f"The GPU ran out of memory: {message} Choose the CPU as device, or close other GPU programs."
    return WorkerFailure(kind, message, "".join(traceback.format_exception(type(error), error, error.__traceback__)))


def _raise_in_thread(thread_id: int, exception: Union[type, None]) -> None:
    """Raise ``exception`` in another thread at its next Python step (None clears a pending one)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id),
                                               ctypes.py_object(exception) if exception else None)


class _JobThread:
    """Runs the jobs one after the other in one thread, so that the process's main thread keeps
    reading the connection. One thread for every job: torch's and OpenMP's per-thread state (the
    thread pool) is set up once, not on every click (a new thread per job made a click about twice as slow)."""

    def __init__(self, answer) -> None:
        self._answer = answer
        self._jobs: "queue.SimpleQueue" = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._computing: Optional[int] = None  # the id of the job computing now
        self._interrupted = False
        self._thread = threading.Thread(target=self._serve, name="explain", daemon=True)
        self._thread.start()

    def put(self, job_id: int, payload: bytes) -> None:
        self._jobs.put((job_id, payload))

    def interrupt(self, job_id: Optional[int] = None) -> None:
        """Stop the computing job (only if it is ``job_id``, when given) at its next Python step; at
        most once per job, and never once it finished."""
        with self._lock:
            if self._computing is not None and not self._interrupted and job_id in (None, self._computing):
                self._interrupted = True
                _raise_in_thread(self._thread.ident, ExplanationCancelled)

    def _serve(self) -> None:
        while True:
            job_id, payload = self._jobs.get()
            with self._lock:
                self._computing, self._interrupted = job_id, False
            self._answer(self._run(job_id, payload))

    def _stop_interrupts(self) -> None:
        with self._lock:
            self._computing = None
            _raise_in_thread(threading.get_ident(), None)  # an interrupt not yet delivered is dropped

    def _run(self, job_id: int, payload: bytes) -> tuple:
        # The interrupt may land anywhere up to _stop_interrupts, including in an except clause: the
        # loop catches it there too. It is sent at most once per job, so the second pass cannot be hit.
        answer = None
        while True:
            try:
                if answer is None:
                    try:
                        answer = (DONE, job_id, run_job(pickle.loads(payload)))
                    except ExplanationCancelled:
                        raise
                    except BaseException as error:  # noqa: BLE001 - every failure is the user's to read
                        answer = (FAILED, job_id, describe_failure(error))
                self._stop_interrupts()
                return answer
            except ExplanationCancelled:
                answer = (CANCELLED, job_id)


def _watch_stdin() -> None:
    """End the process when stdin ends: the client closed it, or the client's process is gone."""
    while sys.stdin.buffer.read(65536):
        pass
    import os

    os._exit(0)


def serve(connection) -> None:
    """Answer jobs from ``connection`` until STOP or the connection's end."""
    lock = threading.Lock()  # answers are sent from the job thread: one message at a time

    def answer(message: tuple) -> None:
        with lock:
            connection.send(message)

    jobs = _JobThread(answer)
    while True:
        try:
            message = connection.recv()
        except (EOFError, OSError):
            break
        kind = message[0]
        if kind == STOP:
            break
        if kind == EXPLAIN:
            jobs.interrupt()  # the running job answers (cancelled) before this one starts
            jobs.put(message[1], message[2])
        elif kind == CANCEL:
            jobs.interrupt(message[1])
    jobs.interrupt()


def prepare_process() -> None:
    """This process's settings for explaining, before torch loads: OpenMP's waits sleep rather than
    spin (inference_threads)."""
    from .inference_threads import prefer_passive_openmp

    prefer_passive_openmp()


def _import_ahead() -> None:
    """Import torch and the explanation code while no job is waiting: a worker started ahead of the
    first click (WorkerClient.start) is then ready for it. A failure is left to the first job, which
    reports it as the panel reads it (a missing package named); a failed import is retried then."""
    try:
        import torch  # noqa: F401  (the slow part)

        from . import explanation, model_bundle  # noqa: F401
    except Exception:  # noqa: BLE001 - see above
        pass


def main() -> int:
    """The process's entry (worker_client runs it): read the address and key from stdin's first two
    lines, listen there for the client, serve it."""
    from multiprocessing.connection import Listener

    address = sys.stdin.buffer.readline().decode().strip()
    authkey = bytes.fromhex(sys.stdin.buffer.readline().decode().strip())
    threading.Thread(target=_watch_stdin, name="stdin-watch", daemon=True).start()
    prepare_process()
    threading.Thread(target=_import_ahead, name="import-ahead", daemon=True).start()
    with Listener(address, authkey=authkey) as listener, listener.accept() as connection:
        serve(connection)
    return 0

