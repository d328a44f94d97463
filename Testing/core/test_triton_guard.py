"""A baseline map where a graphics driver's LLVM is loaded: the process survives (triton_guard).

Each case runs in a fresh Python, as the clash needs: Mesa's libLLVM loaded with its symbols
visible process-wide (what its OpenGL/EGL drivers do), then a baseline map, whose MONAI imports
torchvision, torch._dynamo and, if installed, Triton. Without the guard that process ends in a
segmentation fault (measured: exit -11).
"""

from __future__ import annotations

import glob
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
# Debian's Mesa drivers depend on it; scripts/install-system-deps.sh installs them.
SYSTEM_LLVM = sorted(glob.glob("/usr/lib/*-linux-gnu/libLLVM-*.so.1"))

MAP_AFTER_LOADING_LLVM = """
import ctypes, sys
{load}
import numpy as np
from CycleGANExplainLib.attribution_methods import attribute
from CycleGANExplainLib.model_bundle import load_bundle
bundle = load_bundle(sys.argv[1], "cpu", allow_unknown=True)
maps = attribute("saliency", bundle, np.zeros((1, 64, 64), np.float32))
print("map", maps.shape, "triton", "blocked" if sys.modules.get("triton", 0) is None else "importable")
"""


def run_map(tiny_bundle, load: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", MAP_AFTER_LOADING_LLVM.format(load=load), str(tiny_bundle)],
                          capture_output=True, text=True, cwd=REPO_ROOT / "CycleGANExplain", timeout=300)


@pytest.fixture
def llvm_library():
    if not SYSTEM_LLVM or importlib.util.find_spec("triton") is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs Mesa's libLLVM (scripts/install-system-deps.sh) and torch's Triton (setup.sh)")
        pytest.skip("needs a system libLLVM and Triton (torch's CUDA build)")
    return SYSTEM_LLVM[-1]


def test_a_baseline_map_survives_an_llvm_loaded_process_wide(tiny_bundle, llvm_library):
    done = run_map(tiny_bundle, f"ctypes.CDLL({llvm_library!r}, mode=ctypes.RTLD_GLOBAL)")
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
    assert "map (1, 64, 64) triton blocked" in done.stdout
    assert "a graphics driver's LLVM is loaded" in done.stderr


def test_without_another_llvm_triton_stays_importable(tiny_bundle, llvm_library):
    done = run_map(tiny_bundle, f"ctypes.CDLL({llvm_library!r})")  # loaded privately: no clash, nothing done
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
    assert "map (1, 64, 64) triton importable" in done.stdout
