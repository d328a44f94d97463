"""Checkpoints: atomic writes, and the RNG states needed for a bit-for-bit resume.

Everything stored is tensors or plain Python values (numpy's RNG state is converted), so a
checkpoint loads with ``torch.load(weights_only=True)``: opening one never runs pickled code.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np
import torch


def save_checkpoint(state: Dict[str, Any], path: Union[str, Path]) -> Path:
    """Write to a temporary file beside ``path`` and rename it: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(state, partial)
    os.replace(partial, path)
    return path


class CheckpointError(ValueError):
    """The file is not a usable checkpoint (truncated, empty, foreign or of the wrong kind)."""


# What made each kind of checkpoint, for messages.
_MADE_BY = {"classifier": "train-classifier", "cyclegan": "train-cyclegan"}


def load_checkpoint(path: Union[str, Path], kind: Optional[str] = None) -> Dict[str, Any]:
    """The checkpoint's state; CheckpointError (a ValueError) naming the file and what is wrong.

    ``kind`` ("classifier" or "cyclegan") is the kind the caller needs; None takes any.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint not found: {path}")
    wanted = f"a {kind} checkpoint made by {_MADE_BY.get(kind, 'cyclegan-explain-train')}" if kind else "a checkpoint"
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty; expected {wanted}. Delete it and run the step that makes it again.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises RuntimeError, UnpicklingError, EOFError, ... here
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"{path} cannot be read as {wanted} ({type(error).__name__}: {first_line[:200]}): it is truncated, "
            "damaged or another kind of file. Delete it and run the step that makes it again (an interrupted "
            "train-cyclegan resumes only from a checkpoint it finished writing).") from error
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not {wanted}.")
    if kind is not None and state.get("kind") != kind:
        found = f"a {state['kind']} checkpoint" if isinstance(state.get("kind"), str) else "no checkpoint kind"
        raise CheckpointError(f"{path} holds {found}; expected {wanted}.")
    return state


def capture_rng_states() -> Dict[str, Any]:
    """Python, numpy, torch CPU and (when present) every CUDA device's generator state."""
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "python": [version, list(internal), gauss_next],
        "numpy": [name, keys.tolist(), position, has_gauss, cached_gaussian],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_states(states: Dict[str, Any]) -> None:
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    name, keys, position, has_gauss, cached_gaussian = states["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached_gaussian))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
