"""Export trained (or, for the placeholder bundle, random) networks as a model bundle.

Writes the layout of DESIGN.md contract 3 and loads the result back with the core's loader, so
a bundle that the module could not use is never left behind as if it were good.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch
from torch import nn

from CycleGANExplainLib.intensity import DEFAULT_HU_WINDOW
from CycleGANExplainLib.model_bundle import METADATA_FILE, MODEL_FILES, load_bundle, write_checksums
from CycleGANExplainLib.patch_sampling import PATCH_EXTENT_MM, PATCH_SIZE_PX

from .networks import MalignancyClassifier, UNetGenerator

RESEARCH_USE_NOTICE = (
    "Research use only. Not a medical device: not cleared or approved for diagnosis or any clinical "
    "decision."
)


def base_metadata(
    name: str,
    version: str,
    trained: bool,
    classifier_width: int,
    generator_width: int,
    hu_window=DEFAULT_HU_WINDOW,
) -> Dict[str, Any]:
    """The metadata every bundle carries; training adds its data, commands and evaluation."""
    return {
        "name": name,
        "version": version,
        "trained": trained,
        "intended_use": RESEARCH_USE_NOTICE,
        "patch": {
            "size_px": PATCH_SIZE_PX,
            "extent_mm": PATCH_EXTENT_MM,
            "plane": "axial",
            "axes": "columns towards patient left, rows towards posterior (LPS-aligned)",
            "interpolation": "linear",
        },
        "intensity": {"hu_window": list(hu_window), "normalised_range": [-1.0, 1.0]},
        "classes": ["benign", "malignant"],
        "classifier_output": "logits",
        "architecture": {
            "classifier": {"name": "MalignancyClassifier", "width": classifier_width,
                           "stage_widths": [classifier_width * 2**s for s in range(4)]},
            "generator": {"name": "UNetGenerator", "width": generator_width,
                          "stage_widths": [generator_width * 2**s for s in range(4)]},
        },
        "training_data": None,
        "evaluation": None,
        "torch_version": torch.__version__.split("+")[0],
    }


def _script(module: nn.Module) -> torch.jit.ScriptModule:
    module = module.cpu().eval()
    return torch.jit.script(module)


def export_bundle(
    classifier: nn.Module,
    generator_pos: nn.Module,
    generator_neg: nn.Module,
    out_dir: Union[str, Path],
    metadata: Dict[str, Any],
    overwrite: bool = False,
) -> Path:
    """Write the bundle to ``out_dir`` atomically and verify it loads; returns the folder."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} exists; pass overwrite=True (--overwrite) to replace it.")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        networks = {"classifier": classifier, "generator_pos": generator_pos, "generator_neg": generator_neg}
        for role, network in networks.items():
            _script(network).save(str(staging / MODEL_FILES[role]))
        (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=False) + "\n")
        write_checksums(staging)
        load_bundle(staging, "cpu")  # refuses a bundle the core cannot load
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.chmod(0o755)  # mkdtemp makes it private; a bundle is meant to be shared
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def export_untrained_bundle(
    out_dir: Union[str, Path],
    classifier_width: int = 8,
    generator_width: int = 8,
    seed: int = 0,
    overwrite: bool = False,
    name: Optional[str] = None,
) -> Path:
    """A placeholder bundle of randomly initialised networks, marked untrained everywhere."""
    torch.manual_seed(seed)
    metadata = base_metadata(
        name=name or "untrained-random",
        version="0.0.0",
        trained=False,
        classifier_width=classifier_width,
        generator_width=generator_width,
    )
    metadata["training_data"] = "none: randomly initialised weights (seed {}), for testing the pipeline".format(seed)
    metadata["evaluation"] = "none: untrained, explanations are meaningless"
    return export_bundle(
        MalignancyClassifier(classifier_width),
        UNetGenerator(generator_width),
        UNetGenerator(generator_width),
        out_dir,
        metadata,
        overwrite=overwrite,
    )
