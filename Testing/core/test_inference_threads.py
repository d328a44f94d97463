"""The inference thread policy: one thread for a click's batch, more for large ones, torch's
setting restored afterwards, and passive OpenMP waits asked for only before torch is imported."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import torch

from CycleGANExplainLib import inference_threads
from CycleGANExplainLib.inference import run_networks
from CycleGANExplainLib.model_bundle import load_bundle


def test_thread_count_follows_the_batch_and_the_usable_cores(monkeypatch):
    monkeypatch.setattr(inference_threads, "usable_cores", lambda: 4)
    assert [inference_threads.threads_for(n) for n in (1, 3, 7, 8, 16, 31, 32, 1000)] == [1, 1, 1, 1, 2, 3, 4, 4]


def test_networks_run_with_the_chosen_threads_and_restore_torchs(tiny_bundle, monkeypatch):
    bundle = load_bundle(tiny_bundle, "cpu", allow_unknown=True)
    seen = []
    original = bundle.classifier

    class Recording(torch.nn.Module):
        def forward(self, x):
            seen.append(torch.get_num_threads())
            return original(x)

    monkeypatch.setattr(inference_threads, "usable_cores", lambda: 2)
    torch.set_num_threads(2)
    import dataclasses

    recorded = dataclasses.replace(bundle, classifier=Recording())
    run_networks(recorded, np.zeros((1, 64, 64), np.float32))
    run_networks(recorded, np.zeros((16, 64, 64), np.float32), batch_size=16)
    assert seen == [1, 1, 1, 2, 2, 2]  # x, G+(x), G-(x) for each call
    assert torch.get_num_threads() == 2


def test_passive_waits_are_asked_for_before_torch_only():
    code = ("import os, sys; from CycleGANExplainLib.inference_threads import prefer_passive_openmp as p; "
            "first = p(); import torch; second = p(); print(first, second, os.environ.get('OMP_WAIT_POLICY'))")
    environment = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, check=True)
    assert result.stdout.split() == ["True", "False", "PASSIVE"]
    chosen = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**environment, "OMP_WAIT_POLICY": "ACTIVE"})
    assert chosen.stdout.split()[-1] == "ACTIVE"  # the user's choice stands
