"""Installing a baseline's packages holds numpy and torch at their installed versions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy
import torch

from CycleGANExplainLib.attribution_methods import METHODS
from CycleGANExplainLib.package_installer import install_requirements, installed_constraints


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
