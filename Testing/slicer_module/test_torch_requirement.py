"""The torch the module asks for is one that loads the shipped bundles, and an older one is named."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import unittest
from pathlib import Path

import pytest

from CycleGANExplainLib.package_installer import TORCH_MINIMUM_VERSION, DependencyInstaller, torch_version_problem

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_pyproject_and_the_module_ask_for_the_same_torch(module):
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    [torch] = [requirement for requirement in pyproject["project"]["dependencies"] if requirement.startswith("torch")]
    assert re.sub(r"\s", "", torch) == f"torch>={module.TORCH_MINIMUM_VERSION}"


def test_older_torch_is_refused_with_the_slicer_release_to_use():
    assert torch_version_problem("2.14.1+cu130") is None
    assert torch_version_problem("2.13.0+cpu") is None
    assert torch_version_problem("3.0") is None
    assert torch_version_problem("2.8.0") is None  # the newest for Slicer 5.6 / 5.8's Python 3.9
    assert torch_version_problem("2.2.2") is None  # the newest for Intel macOS
    problem = torch_version_problem("2.1.2")
    assert "PyTorch 2.2 or newer" in problem and "2.1.2" in problem and "PyTorch Utils" in problem
    assert torch_version_problem("1.13.1+cu117") is not None


class RecordingPyTorchUtils:
    """STAND-IN for the PyTorch extension (it cannot be installed here): records install requests and
    fails them with ``failure`` when one is given."""

    def __init__(self, failure: BaseException = None) -> None:
        self.installs, self.failure = [], failure
        outer = self

        class PyTorchUtilsLogic:
            def torchInstalled(self) -> bool:
                return False

            def installTorch(self, **kwargs):
                outer.installs.append(kwargs)
                if outer.failure is not None:
                    raise outer.failure
                return object()

        self.PyTorchUtilsLogic = PyTorchUtilsLogic


def _without_torch(monkeypatch) -> RecordingPyTorchUtils:
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "torch" else real_find_spec(name, *args))
    extension = RecordingPyTorchUtils()
    monkeypatch.setitem(sys.modules, "PyTorchUtils", extension)
    return extension


def _run_as_ctest(module) -> unittest.TestResult:
    """As slicer.testing.runUnitTest (slicer_add_python_unittest) runs the module's self-test: the
    loader finds the test_* methods, so runTest is not called."""
    suite = unittest.TestLoader().loadTestsFromName(module.__name__)
    assert suite.countTestCases() == 2
    result = unittest.TestResult()
    suite.run(result)
    return result


def test_under_ctest_every_self_test_skips_without_torch_and_installs_nothing(module, monkeypatch):
    extension = _without_torch(monkeypatch)
    result = _run_as_ctest(module)
    assert result.wasSuccessful() and result.testsRun == 2
    assert sorted(test._testMethodName for test, _ in result.skipped) == ["test_BaselineOnSampleNodule",
                                                                           "test_ExplainSampleNodule"]
    assert all("PyTorch is not installed" in reason for _, reason in result.skipped)
    assert extension.installs == []


def test_under_ctest_every_self_test_skips_with_a_too_old_torch(module, monkeypatch):
    import importlib.metadata

    real_version = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version",
                        lambda name: "2.1.2" if name == "torch" else real_version(name))
    result = _run_as_ctest(module)
    assert result.wasSuccessful() and len(result.skipped) == 2
    assert all("PyTorch 2.2 or newer" in reason and "2.1.2" in reason for _, reason in result.skipped)


def test_reload_and_test_says_why_each_test_was_skipped(module, monkeypatch):
    extension = _without_torch(monkeypatch)
    messages = []
    test = module.CycleGANExplainTest()
    monkeypatch.setattr(test, "delayDisplay", messages.append)
    test.runTest()  # Slicer's "Reload and Test" calls runTest directly, outside a test runner
    assert [message.split(":")[0] for message in messages] == ["Skipped test_ExplainSampleNodule",
                                                               "Skipped test_BaselineOnSampleNodule"]
    assert all("PyTorch is not installed" in message for message in messages)
    assert extension.installs == []


@pytest.mark.parametrize("failure", [subprocess.CalledProcessError(1, ["python", "-m", "light_the_torch"]),
                                     ImportError("No module named 'torch'"),
                                     ValueError("Failed to get computation backend.")],
                         ids=lambda failure: type(failure).__name__)
def test_a_failed_install_through_the_extension_is_one_runtime_error_with_its_cause(monkeypatch, failure):
    extension = _without_torch(monkeypatch)
    extension.failure = failure
    installer = DependencyInstaller(lambda question, title: True, lambda message, title: None, lambda message: None,
                                    pip_install=None)
    with pytest.raises(RuntimeError, match="PyTorch was not installed") as raised:
        installer.ensure_torch()
    assert str(failure) in str(raised.value)
    assert extension.installs == [{"askConfirmation": False, "torchVersionRequirement": f">={TORCH_MINIMUM_VERSION}"}]
