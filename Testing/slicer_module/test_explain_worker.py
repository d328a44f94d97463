"""The explanation process (explain_worker, worker_client) with the real shipped TorchScript bundle in
a real subprocess, and the panel's controller on a real MRML scene using it.

Only Slicer's Qt layer is stood in for (ManualTimer, RecordingPanel of test_explain_controller).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from CycleGANExplainLib import mrml_explain, worker_client
from CycleGANExplainLib.explain_controller import EXPLAIN_FAILED
from CycleGANExplainLib.explain_worker import Job
from CycleGANExplainLib.model_bundle import default_bundle_dir
from CycleGANExplainLib.patch_sampling import patch_region
from CycleGANExplainLib.volume_checks import NotCTError
from CycleGANExplainLib.worker_client import WorkerClient, WorkerError, worker_python

from .test_explain_controller import Panel

SYSTEM_PYTHON_WITHOUT_NUMPY = "/usr/bin/python3"


class Recorder:
    def __init__(self) -> None:
        self.done, self.failed = [], []

    def on_done(self, tag, batch) -> None:
        self.done.append((tag, batch))

    def on_error(self, tag, error) -> None:
        self.failed.append((tag, error))


def poll_until(client: WorkerClient, condition, timeout_s: float = 300.0) -> float:
    """Poll as the module's timer does until ``condition()``; returns the seconds it took."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout_s, "timed out"
        client.poll()
        time.sleep(0.02)
    return time.monotonic() - started


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def worker_children() -> list:
    """This process's child processes that run the explanation worker."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                command = (entry / "cmdline").read_bytes()
            except (OSError, IndexError):
                continue
            if ppid == os.getpid() and b"explain_worker" in command:
                found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def sample_job():
    """A job on the bundled sample CT at a documented nodule, and a way to make it N seeds long."""
    from CycleGANExplainLib.sample_data import SYNTHETIC_SAMPLE, sample_nodule, sample_volume_path
    from CycleGANExplainLib.volume_io import read_volume

    volume = read_volume(sample_volume_path(SYNTHETIC_SAMPLE))
    seed = np.array(sample_nodule("N2", SYNTHETIC_SAMPLE).centre_ras_mm, dtype=float)

    def job(seeds: int = 1) -> Job:
        seeds_ras = np.repeat(seed[None], seeds, axis=0)
        voxels, ijk_to_ras = patch_region(volume.volume_kji, volume.ijk_to_ras, seeds_ras)
        return Job(voxels, ijk_to_ras, seeds_ras, str(default_bundle_dir()), "cpu", "cyclegan-am", False)

    return job


@pytest.fixture(scope="module")
def warm_client(sample_job):
    """A client whose worker has the shipped bundle loaded (its start costs seconds: once per module)."""
    recorder = Recorder()
    client = WorkerClient(recorder.on_done, recorder.on_error)
    client.submit(sample_job(), "warm-up")
    poll_until(client, lambda: not client.busy)
    assert [tag for tag, _ in recorder.done] == ["warm-up"], recorder.failed
    yield client, recorder
    client.shutdown()


def test_outside_slicer_the_worker_runs_on_this_python(tmp_path, monkeypatch):
    assert worker_python("/some/python3", in_slicer=False) == "/some/python3"
    assert worker_python() == sys.executable  # the tests run outside Slicer
    # Inside Slicer sys.executable is the application: PythonSlicer, from PATH or beside it.
    monkeypatch.setattr(worker_client.shutil, "which", lambda name: None)
    (tmp_path / "PythonSlicer").write_text("")
    assert worker_python(str(tmp_path / "SlicerApp-real"), in_slicer=True) == str(tmp_path / "PythonSlicer")
    with pytest.raises(WorkerError, match="PythonSlicer"):
        worker_python(str(tmp_path / "empty" / "SlicerApp-real"), in_slicer=True)


def test_a_newer_job_interrupts_the_running_one(warm_client, sample_job):
    client, recorder = warm_client
    pid = client.worker_pid
    client.submit(sample_job(200), "long")  # about a minute of CPU on this machine's busy cores
    time.sleep(2.0)  # it computes meanwhile
    client.submit(sample_job(), "short")
    seconds = poll_until(client, lambda: not client.busy, timeout_s=120.0)
    assert [tag for tag, _ in recorder.done][-1] == "short" and "long" not in [tag for tag, _ in recorder.done]
    assert client.worker_pid == pid, "interrupted in the same process, not by restarting it"
    # Had the long job gone on, the short one would have waited for it (~1 min) and the worker
    # would still be computing: it is idle.
    assert seconds < 20.0, seconds
    before = cpu_seconds(pid)
    time.sleep(2.0)
    assert cpu_seconds(pid) - before < 0.5, "the worker still computes the cancelled job"


def test_a_result_from_the_worker_equals_the_in_process_one(module, scene_app, synthetic_ct, nodule_ras):
    volume = scene_app.load_volume(synthetic_ct)
    panel = Panel(module, scene_app, volume)
    try:
        panel.parameters.halfExtentMm = 2.0
        panel.place(nodule_ras)
        panel.fire_debounce()
        panel.wait(timeout_s=300.0)
        [shown] = panel.view.results
        in_process = panel.logic.explain(volume, nodule_ras, device="cpu", halfExtentMm=2.0)
        assert len(shown.batch) == len(in_process.batch) == 3
        for ours, theirs in zip(shown.batch, in_process.batch):
            for name in ("x", "g_pos", "g_neg", "relevance", "patch_hu"):
                np.testing.assert_allclose(getattr(ours, name), getattr(theirs, name), atol=1e-5, err_msg=name)
            assert ours.p_x == pytest.approx(theirs.p_x, abs=1e-5)
            assert ours.outside_fraction == theirs.outside_fraction
    finally:
        panel.controller.shutdown()


def test_an_error_in_the_worker_reaches_the_panel(module, scene_app, synthetic_ct, nodule_ras, tiny_bundle, tmp_path,
                                                  monkeypatch):
    damaged = shutil.copytree(tiny_bundle, tmp_path / "damaged")
    with open(damaged / "classifier.pt", "r+b") as model:  # SHA256SUMS unchanged: only loading notices
        model.seek(100)
        model.write(b"\0\0\0\0")
    volume = scene_app.load_volume(synthetic_ct)
    panel = Panel(module, scene_app, volume)
    try:
        monkeypatch.setattr(panel.logic, "bundleDirFor", lambda bundle=None: damaged)
        panel.place(nodule_ras)
        panel.fire_debounce()
        panel.wait(timeout_s=300.0)
        [(message, detail)] = panel.view.errors
        assert message == EXPLAIN_FAILED and "classifier.pt" in detail and "Traceback" not in detail
        assert not panel.view.results and not panel.view.busy
    finally:
        panel.controller.shutdown()


@pytest.mark.skipif(not Path(SYSTEM_PYTHON_WITHOUT_NUMPY).is_file(), reason="needs a Python without numpy")
def test_a_package_missing_in_the_workers_python_is_named(sample_job):
    recorder = Recorder()
    client = WorkerClient(recorder.on_done, recorder.on_error, python=SYSTEM_PYTHON_WITHOUT_NUMPY)
    try:
        client.submit(sample_job(), "job")
        poll_until(client, lambda: not client.busy, timeout_s=60.0)
    finally:
        client.shutdown()
    [(tag, error)] = recorder.failed
    assert tag == "job" and isinstance(error, WorkerError)
    assert "cannot import numpy" in str(error) and SYSTEM_PYTHON_WITHOUT_NUMPY in str(error)


def test_a_worker_started_ahead_imports_torch_while_it_waits_and_serves_the_first_job(sample_job, caplog):
    recorder = Recorder()
    client = WorkerClient(recorder.on_done, recorder.on_error)
    try:
        client.start()  # what the module does when it is entered
        pid = client.worker_pid
        assert pid is not None and pid in worker_children()
        client.start()
        assert client.worker_pid == pid  # one process, not one per start
        maps = Path(f"/proc/{pid}/maps")
        started = time.monotonic()
        while b"libtorch" not in maps.read_bytes():  # torch is imported before any job was sent
            assert time.monotonic() - started < 120.0, "the worker did not import torch ahead of the first job"
            time.sleep(0.1)
        assert not client.busy and not recorder.done
        client.submit(sample_job(), "first")
        poll_until(client, lambda: not client.busy)
        assert [tag for tag, _ in recorder.done] == ["first"] and client.worker_pid == pid, recorder.failed
    finally:
        client.shutdown()
    # A controller whose process cannot start (no PythonSlicer) only logs it: the click reports it.
    from CycleGANExplainLib.explain_controller import ExplainController

    controller = ExplainController(None, None, None, None, None, python="/nonexistent/PythonSlicer")
    with caplog.at_level("WARNING"):
        controller.warm_up()
    assert "Could not start the explanation process ahead of the first click" in caplog.text
    assert controller.explainer.worker_pid is None


def test_shutdown_leaves_no_process(sample_job):
    recorder = Recorder()
    client = WorkerClient(recorder.on_done, recorder.on_error)
    client.submit(sample_job(50), "running")
    poll_until(client, lambda: client.worker_pid is not None and worker_children(), timeout_s=60.0)
    pid = client.worker_pid
    client.shutdown()  # while it computes
    assert pid not in worker_children() and not Path(f"/proc/{pid}").exists()
    assert not recorder.done and not recorder.failed


def test_a_killed_worker_is_reported_and_the_next_job_starts_a_new_one(warm_client, sample_job):
    client, recorder = warm_client
    pid = client.worker_pid
    client.submit(sample_job(200), "killed")
    time.sleep(1.0)
    os.kill(pid, signal.SIGKILL)
    poll_until(client, lambda: not client.busy, timeout_s=60.0)
    tag, error = recorder.failed[-1]
    assert tag == "killed" and "stopped unexpectedly" in str(error) and "-9" in str(error)
    assert client.worker_pid is None
    client.submit(sample_job(), "after")
    poll_until(client, lambda: not client.busy)
    assert recorder.done[-1][0] == "after" and client.worker_pid not in (None, pid)


def test_the_whole_volume_check_runs_once_per_volume_content(module, scene_app, synthetic_ct, nodule_ras, monkeypatch):
    import slicer

    checked = []
    monkeypatch.setattr(mrml_explain, "check_ct_volume", lambda *args: checked.append(args[0].shape))
    volume = scene_app.load_volume(synthetic_ct)
    for _ in range(3):
        mrml_explain.prepare_request(volume, nodule_ras, default_bundle_dir())
    assert len(checked) == 1
    monkeypatch.undo()
    voxels = slicer.util.arrayFromVolume(volume)
    voxels[:] = 500  # no air left: not a CT any more
    slicer.util.arrayFromVolumeModified(volume)
    with pytest.raises(NotCTError, match="air"):
        mrml_explain.prepare_request(volume, nodule_ras, default_bundle_dir())
