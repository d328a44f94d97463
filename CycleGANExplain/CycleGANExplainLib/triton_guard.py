"""Keeping Triton's LLVM from crashing the process where a graphics driver's LLVM is loaded.

PyTorch's CUDA builds ship Triton, whose native library carries its own LLVM. Importing it after
another LLVM's symbols are visible process-wide (Mesa's OpenGL/EGL drivers load one: llvmpipe,
radeonsi) ends in a segmentation fault, because the first-loaded symbols win. The baselines import
it without asking for it: MONAI imports torchvision, which imports torch._dynamo, which imports
Triton if it is installed. Measured here with Mesa's libLLVM-15 and Triton of torch 2.14.1.

- Before any view renders (the web viewer's start): ``load_triton_early`` imports it first, and
  both LLVMs then work.
- Once an LLVM is loaded (3D Slicer has its OpenGL up long before a module runs):
  ``keep_triton_from_a_loaded_llvm`` marks Triton as not importable, so torch runs without it.
  Eager inference, all that explaining does, never uses Triton; the import would only crash.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import sys

logger = logging.getLogger(__name__)

# A function of LLVM's C API: visible to a process-wide lookup only when some LLVM was loaded globally.
LLVM_SYMBOL = "LLVMContextCreate"


def llvm_visible_process_wide() -> bool:
    try:
        return hasattr(ctypes.CDLL(None), LLVM_SYMBOL)
    except (OSError, TypeError):  # no process-wide handle (Windows), where this clash is not known
        return False


def triton_installed_not_imported() -> bool:
    return "triton" not in sys.modules and importlib.util.find_spec("triton") is not None


def load_triton_early() -> None:
    """Import Triton now, if installed, while no other LLVM is loaded (0.1 s)."""
    if triton_installed_not_imported() and not llvm_visible_process_wide():
        import triton  # noqa: F401


def keep_triton_from_a_loaded_llvm() -> None:
    """Before importing what may import Triton: if another LLVM is visible process-wide and Triton is
    installed but not imported, make its import fail cleanly (ImportError) instead of crashing."""
    if triton_installed_not_imported() and llvm_visible_process_wide():
        sys.modules["triton"] = None  # Python's mark for a module that cannot be imported
        logger.warning("Triton is installed but was not loaded: a graphics driver's LLVM is loaded in this "
                       "process, and Triton's own LLVM would crash it. Explanations do not need Triton.")
