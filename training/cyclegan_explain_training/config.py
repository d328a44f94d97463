"""Training configuration: defaults follow the paper where it gives a value (see README-training).

Configs are JSON files (training/configs/paper.json, tiny.json) so that Python 3.9 reads them
without a TOML parser. A file may give any subset of the keys; the rest keep these defaults,
and command-line flags override both. Keys starting with "_" are comments.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from CycleGANExplainLib.intensity import DEFAULT_HU_WINDOW
from CycleGANExplainLib.networks import PAPER_CLASSIFIER_WIDTH, PAPER_GENERATOR_WIDTH


@dataclass(frozen=True)
class ClassifierConfig:
    width: int = PAPER_CLASSIFIER_WIDTH  # paper: 32-64-128-256
    batch_size: int = 32
    learning_rate: float = 1e-3  # not given in the paper: Adam's usual default
    weight_decay: float = 1e-4
    dropout: float = 0.0  # the paper's classifier has none
    max_epochs: int = 150  # the paper trains "until convergence": early stopping decides
    patience: int = 20  # epochs without a better validation AUC before stopping
    validation_fraction: float = 0.15  # of the training split's patients
    seed: int = 0
    # The seed that draws the validation patients; None: ``seed``. Twins trained with other seeds
    # keep validation_seed 0, so every classifier of an activation-maximisation ensemble and the
    # CycleGAN-AM leave out the same patients.
    validation_seed: Optional[int] = None
    # "paper" (the bundled architecture) or "resnet" (a held-out architecture for measuring
    # whether counterfactuals transfer; networks.HELD_OUT_ARCHITECTURES).
    architecture: str = "paper"
    # Against the size confound (size_confound.py says what each does; all off by default):
    size_balanced_loss: bool = False  # loss weights 1 / p(label | diameter bin) instead of class weights
    size_bins: int = 8  # diameter quantile bins of size_balanced_loss
    auxiliary_ratings: List[str] = field(default_factory=list)  # reader ratings a training-only head regresses
    auxiliary_weight: float = 0.0  # weight of that head's mean squared error (needs --ratings-from)
    selection: str = "auc"  # "auc": worst-fill validation AUC; "matched_pairs": mean of concordance and AUC

    @property
    def validation_split_seed(self) -> int:
        return self.seed if self.validation_seed is None else self.validation_seed


@dataclass(frozen=True)
class CycleGANConfig:
    width: int = PAPER_GENERATOR_WIDTH  # paper: 48-96-192-384, discriminators alike
    batch_size: int = 16
    learning_rate: float = 2e-4  # not given in the paper: CycleGAN's (Zhu et al. 2017) Adam settings
    beta1: float = 0.5
    beta2: float = 0.999
    steps: int = 20000  # the paper trains "until the generator loss converges"
    checkpoint_every: int = 500
    seed: int = 0
    loss_weights: Dict[str, float] = field(
        default_factory=lambda: {"cycle": 1.0, "similarity": 1.0, "adversarial": 1.0, "activation": 1.0}
    )
    # Deviations from the paper (all off by default; training/README.md explains each):
    residual_generators: bool = False  # generators predict a change added to x, not the image
    similarity_l1: float = 0.0  # L_sim = DSSIM + similarity_l1 * |x - G(x)|_1 (paper: DSSIM only)
    activation_target_probability: float = 1.0  # L_AM stops pushing once C(G(x)) reaches it (paper: 1)
    validation_every: int = 0  # steps between validation checks that pick the exported generators (0: never)
    # Realism terms (losses.locality_loss, losses.new_brightness_loss; 0: off, the paper's loss):
    locality_l1: float = 0.0  # weight of |G(x) - x| beyond the real image and beyond locality_mm of the nodule
    locality_mm: float = 10.0  # change is free within this distance of the nodule's mask
    new_brightness: float = 0.0  # weight of intensity put above new_brightness_hu where x was darker
    new_brightness_hu: float = 150.0  # above solid soft tissue: calcification-like brightness
    # Transfer (issue 21): L_AM reads G(x) through a random same-nodule view per classifier and step
    # (augment.same_nodule_view: mirroring, quarter turns, shifts up to this many pixels; 0: off).
    activation_view_shift_px: int = 0
    # Changes smaller than this many HU are dropped, larger ones shrink by it (UNetGenerator's
    # change_deadband; residual generators only; 0: off). Export can set it for a finished run.
    change_deadband_hu: float = 0.0


@dataclass(frozen=True)
class TrainingConfig:
    hu_window: List[float] = field(default_factory=lambda: list(DEFAULT_HU_WINDOW))
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    cyclegan: CycleGANConfig = field(default_factory=CycleGANConfig)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def _section(cls, values: Dict[str, Any], where: str):
    values = {key: value for key, value in values.items() if not key.startswith("_")}  # "_comment" etc.
    known = {item.name for item in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"Unknown {where} setting(s) {unknown}; known: {sorted(known)}")
    return cls(**values)


def config_from_dict(values: Dict[str, Any]) -> TrainingConfig:
    """Build a config from a (possibly partial) dict, refusing unknown keys by name."""
    values = dict(values)
    classifier = _section(ClassifierConfig, values.pop("classifier", {}), "classifier")
    cyclegan = _section(CycleGANConfig, values.pop("cyclegan", {}), "cyclegan")
    top = _section(TrainingConfig, values, "top-level")
    return dataclasses.replace(top, classifier=classifier, cyclegan=cyclegan)


def load_config(path: Optional[Union[str, Path]] = None) -> TrainingConfig:
    """The paper's defaults, updated by the JSON file at ``path`` when one is given."""
    if path is None:
        return TrainingConfig()
    path = Path(path)
    try:
        return config_from_dict(json.loads(path.read_text()))
    except json.JSONDecodeError as error:
        raise ValueError(f"Config {path} is not valid JSON: {error}") from error


def with_overrides(config: TrainingConfig, section: str, overrides: Dict[str, Any]) -> TrainingConfig:
    """Replace the given keys of one section (``classifier`` or ``cyclegan``); None means keep."""
    given = {key: value for key, value in overrides.items() if value is not None}
    updated = dataclasses.replace(getattr(config, section), **given)
    return dataclasses.replace(config, **{section: updated})
