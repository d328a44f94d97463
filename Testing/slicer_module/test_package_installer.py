"""Installing torch and a baseline's packages: asked first, bounded, numpy and torch held at their installed versions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy
import pytest
import torch

from CycleGANExplainLib.attribution_methods import METHODS
from CycleGANExplainLib.package_installer import DependencyInstaller, install_requirements, installed_constraints


def test_constraints_name_the_installed_numpy_and_torch():
    numpy_line, torch_line = installed_constraints()
    assert numpy_line == f"numpy=={numpy.__version__}"
    # pip sees the distribution's version, which may lack the build's local tag (+cu130, +cpu).
    assert torch_line.startswith("torch==") and torch.__version__.startswith(torch_line.removeprefix("torch=="))
    assert installed_constraints(("numpy", "no-such-distribution-here")) == [f"numpy=={numpy.__version__}"]


def _recorded_install(pip_ensure: bool):
    calls = []

    def record(*args, **kwargs):
        # The constraints file exists only during the call: read it now.
        constraints = kwargs.get("constraints") or args[0][args[0].index("-c") + 1]
        calls.append((args, kwargs, Path(constraints).read_text(encoding="utf-8").splitlines()))

    requirements = METHODS["integrated-gradients"].requirements
    if pip_ensure:
        install_requirements(requirements, pip_install=None, pip_ensure=record)
    else:
        install_requirements(requirements, pip_install=record)
    return requirements, calls


def test_old_slicer_gets_pip_install_with_a_constraints_file():
    requirements, calls = _recorded_install(pip_ensure=False)
    [(args, kwargs, constraints)] = calls
    assert args[0][:1] == ["-c"] and args[0][2:] == list(requirements) and not kwargs
    assert constraints == installed_constraints()
    assert not Path(args[0][1]).exists(), "the constraints file is removed afterwards"


def test_slicer_with_pip_ensure_gets_the_constraints_and_no_second_question():
    requirements, calls = _recorded_install(pip_ensure=True)
    [(args, kwargs, constraints)] = calls
    assert args == (list(requirements),)
    assert kwargs["prompt_install"] is False and kwargs["requester"] == "CycleGAN Explain"
    assert constraints == installed_constraints()


def test_real_pip_accepts_the_command_and_changes_nothing_when_satisfied(tmp_path):
    """The arguments, run through this environment's pip: a dry run that would install nothing."""
    commands = []
    install_requirements(METHODS["lrp"].requirements,
                         pip_install=lambda arguments: commands.append(
                             subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-index",
                                             *arguments], capture_output=True, text=True)))
    [result] = commands
    assert result.returncode == 0, result.stderr
    assert "Would install" not in result.stdout


class Dialogs:
    """Answers the installer's questions as told and records what it said."""

    def __init__(self, answer: bool) -> None:
        self.answer, self.questions, self.messages, self.statuses = answer, [], [], []

    def ask(self, question: str, title: str) -> bool:
        self.questions.append(question)
        return self.answer

    def tell(self, message: str, title: str) -> None:
        self.messages.append(message)


def _installer(dialogs: Dialogs, pip_install=None, pip_ensure=None) -> DependencyInstaller:
    def refuse(*args, **kwargs):
        raise AssertionError("pip must not run")

    return DependencyInstaller(dialogs.ask, dialogs.tell, dialogs.statuses.append, pip_install or refuse, pip_ensure)


def test_a_method_whose_packages_are_installed_asks_nothing():
    dialogs = Dialogs(answer=False)
    assert _installer(dialogs).ensure_method_packages("integrated-gradients")
    assert not dialogs.questions


def test_declined_packages_install_nothing_and_say_what_that_means(monkeypatch):
    monkeypatch.setitem(sys.modules, "captum", None)  # how Python marks a module as not importable
    dialogs = Dialogs(answer=False)
    assert not _installer(dialogs).ensure_method_packages("occlusion")
    assert "captum" in dialogs.questions[0]
    assert "Occlusion was not computed because captum is not installed" in dialogs.messages[0]


def test_confirmed_packages_are_installed_bounded_with_numpy_and_torch_held(monkeypatch):
    monkeypatch.setitem(sys.modules, "captum", None)
    calls = []

    def pip_ensure(requirements, constraints, prompt_install, requester):
        calls.append((requirements, Path(constraints).read_text(encoding="utf-8")))
        del sys.modules["captum"]  # what a successful install does: captum is importable again

    dialogs = Dialogs(answer=True)
    assert _installer(dialogs, pip_ensure=pip_ensure).ensure_method_packages("occlusion")
    [(requirements, constraints)] = calls
    assert requirements == list(METHODS["occlusion"].requirements)
    assert f"numpy=={numpy.__version__}" in constraints and "torch==" in constraints
    assert dialogs.statuses == ["Installing captum..."]


def test_an_install_that_leaves_the_package_missing_is_an_error_naming_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "captum", None)
    with pytest.raises(RuntimeError, match="Could not install captum; see the Python console"):
        _installer(Dialogs(answer=True), pip_install=lambda arguments: None).ensure_method_packages("occlusion")


def test_missing_torch_declined_installs_nothing(monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "torch" else real_find_spec(name, *args))
    monkeypatch.setitem(sys.modules, "PyTorchUtils", None)  # would fail if the installer went on
    dialogs = Dialogs(answer=False)
    assert not _installer(dialogs).ensure_torch()
    assert "needs PyTorch" in dialogs.questions[0]
    dialogs.answer = True
    with pytest.raises(RuntimeError, match="needs the 'PyTorch' extension"):
        _installer(dialogs).ensure_torch()
