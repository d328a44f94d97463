"""The Slicer side of the explanation process (``explain_worker``): start it, send it jobs, poll it.

Qt-free, so it runs headless: the module calls ``poll`` from a QTimer, a test in a loop. Nothing
here blocks on the worker: connecting, sending a small job and reading an answer are immediate.

- The process starts with the first job and stays, with the bundle loaded, so later clicks are
  fast; ``shutdown`` (module exit or reload) stops it and waits for it to end.
- A new job cancels the running one for real: the worker interrupts the computation. If the
  process has not answered a cancelled job within CANCEL_GRACE_S (stuck in one long native call),
  it is killed, and the waiting job goes to a new one.
- A worker that dies (killed, crashed, out of memory) fails its job with a message that says so;
  the next job starts a new process.
- Results and errors are delivered by ``poll``, on the thread that calls it.
"""

from __future__ import annotations

import logging
import os
import pickle
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import weakref
from multiprocessing.connection import Client, arbitrary_address
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from .explain_worker import CANCEL, CANCELLED, DONE, EXPLAIN, FAILED, STOP, Job, WorkerFailure

Done = Callable[[Any, Any], None]  # (tag, ExplanationBatch)
Failed = Callable[[Any, BaseException], None]  # (tag, error)

# A cancelled job's computation stops at its next Python step (milliseconds); longer means stuck.
CANCEL_GRACE_S = 5.0
# From start to the worker's listening: Python's start, a few hundred ms (more on a busy machine).
START_TIMEOUT_S = 60.0
# On shutdown: how long the worker may take to exit before it is killed.
EXIT_WAIT_S = 5.0
LIBRARY_PARENT = Path(__file__).resolve().parent.parent  # the folder that holds CycleGANExplainLib


class WorkerError(RuntimeError):
    """An explanation failed in the worker process, or the process itself did."""

    def __init__(self, message: str, kind: str = "", details: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.details = details


def worker_python(executable: Optional[str] = None, in_slicer: Optional[bool] = None) -> str:
    """The Python that runs the worker: ``executable`` (default sys.executable) outside Slicer; inside
    Slicer, where sys.executable is the application, its PythonSlicer (on the launcher's PATH, else
    beside the executable), as Slicer's AI extensions start theirs."""
    executable = executable or sys.executable
    if in_slicer is None:
        in_slicer = getattr(sys.modules.get("slicer"), "app", None) is not None
    if not in_slicer:
        return executable
    name = "PythonSlicer.exe" if os.name == "nt" else "PythonSlicer"
    here = Path(executable).resolve().parent
    for candidate in (shutil.which("PythonSlicer"), here / name, here.parent / "bin" / name):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    raise WorkerError(f"Slicer's Python (PythonSlicer) was not found on PATH or beside {executable}; "
                      "the explanation process cannot start.")


def _stop_process(process: subprocess.Popen) -> None:
    """End the worker: closing stdin ends it (explain_worker._watch_stdin); killed if it lingers."""
    try:
        process.stdin.close()
    except OSError:
        pass
    try:
        process.wait(EXIT_WAIT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class _Worker:
    """One running worker process and its connection."""

    def __init__(self, python: str) -> None:
        self.log_dir = tempfile.mkdtemp(prefix="cyclegan-explain-")  # private (0700): the log and, on POSIX, the socket
        self.address = arbitrary_address("AF_PIPE") if os.name == "nt" else os.path.join(self.log_dir, "worker.sock")
        self.authkey = secrets.token_bytes(32)
        self.log_path = os.path.join(self.log_dir, "worker.log")
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                # -c, not -m: the worker's classes must pickle under the package's name, not __main__'s.
                [python, "-c", "from CycleGANExplainLib.explain_worker import main; main()"], cwd=str(LIBRARY_PARENT),
                stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))  # no console window on Windows
        self.process.stdin.write(f"{self.address}\n{self.authkey.hex()}\n".encode())
        self.process.stdin.flush()
        self.started = time.monotonic()
        self.connection = None
        self._finalizer = weakref.finalize(self, _stop_process, self.process)  # even if shutdown is never called

    @property
    def pid(self) -> int:
        return self.process.pid

    def connected(self) -> bool:
        """Connect if the worker listens by now; never waits for it."""
        if self.connection is None:
            try:
                self.connection = Client(self.address, authkey=self.authkey)
            except (FileNotFoundError, ConnectionRefusedError):
                if self.process.poll() is None and time.monotonic() - self.started > START_TIMEOUT_S:
                    raise WorkerError(f"The explanation process did not start within {START_TIMEOUT_S:.0f} s."
                                      + self.log_tail()) from None
        return self.connection is not None

    def log_tail(self, lines: int = 12) -> str:
        try:
            text = Path(self.log_path).read_text(errors="replace").strip()
        except OSError:
            return ""
        return ("\n\n" + "\n".join(text.splitlines()[-lines:])) if text else ""

    def stop(self) -> None:
        if self.connection is not None:
            try:
                self.connection.send((STOP,))
            except OSError:
                pass
            self.connection.close()
        self._finalizer()
        shutil.rmtree(self.log_dir, ignore_errors=True)


class WorkerClient:
    """Runs jobs in the worker process, the latest one only: ``submit``, then ``poll`` while ``busy``."""

    def __init__(self, on_done: Done, on_error: Failed, python: Optional[str] = None) -> None:
        self._on_done = on_done
        self._on_error = on_error
        self._python = python
        self._worker: Optional[_Worker] = None
        self._next_id = 0
        self._current: Optional[tuple] = None  # (job id, tag, pickled job, sent)
        self._cancelled: Dict[int, float] = {}  # job id -> when cancelled, until the worker answers it

    @property
    def busy(self) -> bool:
        """Whether a job runs or waits (its result not yet delivered or discarded)."""
        return self._current is not None

    @property
    def worker_pid(self) -> Optional[int]:
        """The worker process's id, while one runs."""
        return self._worker.pid if self._worker is not None and self._worker.process.poll() is None else None

    def start(self) -> None:
        """Start the worker process now if none runs (it imports torch while it waits), so that the
        first explanation does not wait for a Python and torch to start."""
        if self._worker is None:
            self._worker = _Worker(self._python or worker_python())

    def submit(self, job: Job, tag: Any = None) -> None:
        """Run ``job`` now, cancelling the running one; its result or error goes with ``tag``."""
        self.cancel()
        self._next_id += 1
        self._current = (self._next_id, tag, pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL), False)
        self.start()
        self._send_current()

    def cancel(self) -> None:
        """Stop the running job in the worker; its answer is discarded."""
        if self._current is None:
            return
        job_id, _, _, sent = self._current
        self._current = None
        if sent:
            self._cancelled[job_id] = time.monotonic()
            self._send((CANCEL, job_id))

    def poll(self) -> None:
        """Deliver the current job's answer, notice a dead or stuck worker; call it regularly while busy."""
        worker = self._worker
        if worker is None:
            return
        try:
            self._send_current()
            while worker.connection is not None and worker.connection.poll(0):
                self._receive(worker.connection.recv())
        except (EOFError, OSError, WorkerError) as error:
            self._worker_lost(error)
            return
        if worker.process.poll() is not None:
            self._worker_lost(None)
        elif any(time.monotonic() - since > CANCEL_GRACE_S for since in self._cancelled.values()):
            logging.warning("The explanation process did not stop a cancelled explanation; restarting it.")
            self._restart()

    def shutdown(self) -> None:
        """Stop the worker process and wait for it to end (module exit, reload, Slicer's exit)."""
        self._current = None
        self._cancelled.clear()
        if self._worker is not None:
            self._worker.stop()
            self._worker = None

    # --- helpers ---------------------------------------------------------------------------------

    def _send(self, message: tuple) -> None:
        worker = self._worker
        if worker is not None and worker.connection is not None:
            worker.connection.send(message)

    def _send_current(self) -> None:
        if self._current is None or self._current[3] or not self._worker.connected():
            return
        job_id, tag, payload, _ = self._current
        self._worker.connection.send((EXPLAIN, job_id, payload))
        self._current = (job_id, tag, payload, True)

    def _receive(self, message: tuple) -> None:
        kind, job_id = message[0], message[1]
        self._cancelled.pop(job_id, None)
        if self._current is None or job_id != self._current[0] or kind == CANCELLED:
            return  # a cancelled job's answer
        tag = self._current[1]
        self._current = None
        if kind == DONE:
            self._on_done(tag, message[2])
        elif kind == FAILED:
            failure: WorkerFailure = message[2]
            self._on_error(tag, WorkerError(failure.message, failure.kind, failure.details))

    def _worker_lost(self, error: Optional[BaseException]) -> None:
        """The process died or its connection broke: the current job fails, the next starts a new one."""
        worker, current = self._worker, self._current
        code = worker.process.poll()
        tail = worker.log_tail()
        self._worker, self._current = None, None
        self._cancelled.clear()
        worker.stop()
        if current is None:
            return
        if isinstance(error, WorkerError):
            reason = error
        else:
            state = f"exit code {code}" if code is not None else f"connection lost: {error}"
            reason = WorkerError(f"The explanation process stopped unexpectedly ({state}); the next explanation "
                                 f"starts a new one.{tail}")
        self._on_error(current[1], reason)

    def _restart(self) -> None:
        """Kill a worker that does not stop; the waiting job, if any, goes to a new process."""
        current = self._current
        self._worker.stop()
        self._worker = None
        self._cancelled.clear()
        if current is not None:
            self._current = (current[0], current[1], current[2], False)
            self._worker = _Worker(self._python or worker_python())
