"""The Slicer module's worker for explanations, headless: results arrive on the polling thread,
newer requests supersede waiting and running ones, cancel frees at once, errors are delivered."""

from __future__ import annotations

import threading
import time

import pytest

from CycleGANExplainLib.background_explainer import BackgroundExplainer


class Gate:
    """A compute function that blocks each request until the test releases it."""

    def __init__(self) -> None:
        self.started, self.release, self.threads = [], {}, []

    def __call__(self, request):
        self.release.setdefault(request, threading.Event())
        self.started.append(request)
        self.threads.append(threading.current_thread().name)
        assert self.release[request].wait(10)
        if request == "broken":
            raise RuntimeError("CUDA out of memory")
        return f"result of {request}"

    def open(self, request) -> None:
        self.release.setdefault(request, threading.Event()).set()


def poll_until(explainer, condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        explainer.poll()
        time.sleep(0.005)


@pytest.fixture
def setup():
    gate, delivered = Gate(), []
    explainer = BackgroundExplainer(gate, lambda request, result: delivered.append((request, result, threading.current_thread().name)),
                                    lambda request, error: delivered.append((request, str(error), "error")))
    yield gate, explainer, delivered
    for request in list(gate.release):
        gate.open(request)
    explainer.shutdown()


def test_the_result_arrives_on_the_polling_thread_not_the_worker(setup):
    gate, explainer, delivered = setup
    explainer.submit("a")
    poll_until(explainer, lambda: gate.started == ["a"])
    explainer.poll()
    assert delivered == [] and explainer.busy  # still running: nothing yet, the caller is free
    gate.open("a")
    poll_until(explainer, lambda: delivered)
    assert delivered == [("a", "result of a", threading.current_thread().name)]
    assert gate.threads[0] != threading.current_thread().name and not explainer.busy


def test_requests_made_while_busy_supersede_each_other(setup):
    gate, explainer, delivered = setup
    explainer.submit("a")
    poll_until(explainer, lambda: gate.started == ["a"])
    for request in ("b", "c", "d"):  # a burst of seeds while "a" runs
        explainer.submit(request)
    gate.open("a")
    poll_until(explainer, lambda: gate.started == ["a", "d"])
    gate.open("d")
    poll_until(explainer, lambda: not explainer.busy)
    assert gate.started == ["a", "d"]  # b and c never ran
    assert [request for request, *_ in delivered] == ["d"]  # a's result was stale once d was asked for


def test_cancel_frees_at_once_and_discards_the_running_result(setup):
    gate, explainer, delivered = setup
    explainer.submit("a")
    poll_until(explainer, lambda: gate.started == ["a"])
    explainer.submit("b")
    explainer.cancel()
    gate.open("a")
    poll_until(explainer, lambda: not explainer.busy)
    assert delivered == [] and gate.started == ["a"]
    explainer.submit("c")  # and it takes new work afterwards
    gate.open("c")
    poll_until(explainer, lambda: delivered)
    assert delivered[0][:2] == ("c", "result of c")


def test_errors_are_delivered_on_the_polling_thread(setup):
    gate, explainer, delivered = setup
    gate.open("broken")
    explainer.submit("broken")
    poll_until(explainer, lambda: delivered)
    assert delivered == [("broken", "CUDA out of memory", "error")]
