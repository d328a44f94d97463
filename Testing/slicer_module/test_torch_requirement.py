"""The torch the module asks for is one that loads the shipped bundles, and an older one is named."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

from CycleGANExplainLib.package_installer import torch_version_problem

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_pyproject_and_the_module_ask_for_the_same_torch(module):
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    [torch] = [requirement for requirement in pyproject["project"]["dependencies"] if requirement.startswith("torch")]
    assert re.sub(r"\s", "", torch) == f"torch>={module.TORCH_MINIMUM_VERSION}"


def test_older_torch_is_refused_with_the_slicer_release_to_use():
    assert torch_version_problem("2.14.1+cu130") is None
    assert torch_version_problem("2.13.0+cpu") is None
    assert torch_version_problem("3.0") is None
    problem = torch_version_problem("2.8.0")
    assert "PyTorch 2.13 or newer" in problem and "2.8.0" in problem and "Slicer 5.10" in problem
    assert torch_version_problem("2.9.1+cu128") is not None


def test_self_test_without_torch_or_the_extension_says_it_is_skipped(module, monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "torch" else real_find_spec(name, *args))
    monkeypatch.setitem(sys.modules, "PyTorchUtils", None)  # the extension is not installed
    problem = module.CycleGANExplainTest.torchProblem()
    assert "needs the 'PyTorch' extension" in problem
    messages = []
    test = module.CycleGANExplainTest()
    monkeypatch.setattr(test, "delayDisplay", messages.append)
    monkeypatch.setattr(test, "setUp", lambda: messages.append("ran"))
    test.runTest()
    assert messages == [f"Skipped the CycleGAN Explain self-test: {problem}"]


def test_self_test_installs_torch_through_the_extension(module, monkeypatch):
    import importlib.util
    import types

    calls = []

    class PyTorchUtilsLogic:  # STAND-IN for the PyTorch extension, which cannot be installed here
        def torchInstalled(self):
            return False

        def installTorch(self, **kwargs):
            calls.append(kwargs)
            return object()

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "torch" else real_find_spec(name, *args))
    monkeypatch.setitem(sys.modules, "PyTorchUtils", types.SimpleNamespace(PyTorchUtilsLogic=PyTorchUtilsLogic))
    assert module.CycleGANExplainTest.torchProblem() is None
    assert calls == [{"askConfirmation": False, "torchVersionRequirement": f">={module.TORCH_MINIMUM_VERSION}"}]
