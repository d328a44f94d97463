"""Loading the model bundle (DESIGN.md, contract 3).

A bundle is a folder holding ``classifier.pt``, ``generator_pos.pt``, ``generator_neg.pt``
(TorchScript), ``metadata.json`` and ``SHA256SUMS``. Every file is checked against SHA256SUMS
before anything is deserialised: a TorchScript file is code, so a tampered one is refused
rather than run.

torch is imported inside functions only: inside Slicer it comes from the PyTorch extension and
must not be needed just to import this module.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple, Union

from .package_resources import models_dir as shipped_models_dir

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

logger = logging.getLogger(__name__)

MODEL_FILES = {
    "classifier": "classifier.pt",
    "generator_pos": "generator_pos.pt",
    "generator_neg": "generator_neg.pt",
}
METADATA_FILE = "metadata.json"
CHECKSUM_FILE = "SHA256SUMS"
# The bundles shipped with the module, one folder each, and the one used when none is chosen.
DEFAULT_BUNDLE_NAME = "lidc-voi"
DEVICE_CHOICES = ("auto", "cpu", "cuda")
# metadata.json's training_data.dataset.source, in words (for help texts and the bundle listing).
TRAINING_DATA_SOURCES = {
    "voi": "real LIDC-IDRI chest CT: nodule sub-volumes of the training patients of a fixed patient-level split",
    "dicom": "real LIDC-IDRI chest CT images",
    "phantoms": "CT phantoms rendered from LIDC-IDRI readers' nodule contours (no patient images)",
}


class BundleError(RuntimeError):
    """The bundle cannot be used: missing, malformed or incompatible."""


class BundleIntegrityError(BundleError):
    """A bundle file is missing or does not match its SHA-256 checksum."""


@dataclass(frozen=True)
class BundleMetadata:
    """What the module, the command line and training agree on, read from metadata.json."""

    name: str
    version: str
    trained: bool
    patch_size_px: int
    patch_extent_mm: float
    hu_window: Tuple[float, float]
    class_names: Tuple[str, ...]
    malignant_index: int
    raw: Dict[str, Any] = field(repr=False, compare=False)

    @property
    def display_name(self) -> str:
        state = "trained" if self.trained else "UNTRAINED - random weights, explanations are meaningless"
        return f"{self.name} {self.version} ({state})"

    @property
    def summary(self) -> str:
        """What the models were trained on and how well they did, in one sentence (for help texts)."""
        if not self.trained:
            return "Untrained placeholder: randomly initialised networks; its explanations are meaningless."
        return str(self.raw.get("summary") or "Trained; see metadata.json for the training data and evaluation.")

    @property
    def trained_on(self) -> str:
        """The training data in words, from training_data.dataset.source."""
        if not self.trained:
            return "nothing (random weights)"
        data = self.raw.get("training_data")
        source = ((data.get("dataset") or {}) if isinstance(data, dict) else {}).get("source")
        return TRAINING_DATA_SOURCES.get(source, f"data source {source!r} (see metadata.json)")

    @property
    def headline_evaluation(self) -> str:
        """The classifier's test AUC beside the diameter-only baseline, and the targets missed."""
        evaluation = self.raw.get("evaluation")
        if not isinstance(evaluation, dict):  # None before `evaluate --attach`; a sentence for untrained bundles
            return str(evaluation) if evaluation else "not evaluated"
        heading = f"{evaluation.get('split', '?')} split, n = {evaluation.get('n', '?')}"
        if evaluation.get("condition"):
            heading += f" ({evaluation['condition']})"
        figures = [f"classifier AUC {evaluation.get('classifier_auc', 'not recorded')}"]
        by_condition = evaluation.get("classifier_auc_by_condition") or {}
        if len(by_condition) > 1:  # real CT: under each fill beyond the VOI and with the seed moved
            figures.append("by condition: " + ", ".join(f"{label} {auc}" for label, auc in by_condition.items()))
        figures.append(f"nodule diameter alone {evaluation.get('diameter_only_auc', 'not recorded')}")
        if evaluation.get("two_feature_auc"):
            figures.append(f"mask area and mean HU alone {evaluation['two_feature_auc']}")
        missed = evaluation.get("targets_missed") or []
        return f"{heading}: {'; '.join(figures)}; targets missed: {', '.join(missed) if missed else 'none'}"

    @classmethod
    def from_json(cls, raw: Dict[str, Any]) -> "BundleMetadata":
        try:
            patch = raw["patch"]
            window = raw["intensity"]["hu_window"]
            class_names = tuple(raw["classes"])
            return cls(
                name=str(raw["name"]),
                version=str(raw["version"]),
                trained=bool(raw["trained"]),
                patch_size_px=int(patch["size_px"]),
                patch_extent_mm=float(patch["extent_mm"]),
                hu_window=(float(window[0]), float(window[1])),
                class_names=class_names,
                malignant_index=class_names.index("malignant"),
                raw=raw,
            )
        except (KeyError, TypeError, ValueError, IndexError) as error:
            raise BundleError(f"{METADATA_FILE} is malformed: {error!r}") from error


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_checksums(bundle_dir: Union[str, Path]) -> None:
    """Write SHA256SUMS for the metadata and the three model files (used by export)."""
    bundle_dir = Path(bundle_dir)
    names = [METADATA_FILE, *MODEL_FILES.values()]
    lines = [f"{sha256_of(bundle_dir / name)}  {name}\n" for name in names]
    (bundle_dir / CHECKSUM_FILE).write_text("".join(lines))


def verify_checksums(bundle_dir: Union[str, Path]) -> None:
    """Raise BundleIntegrityError naming the first file that is missing or altered."""
    bundle_dir = Path(bundle_dir)
    sums_path = bundle_dir / CHECKSUM_FILE
    if not sums_path.is_file():
        raise BundleIntegrityError(f"Model bundle {bundle_dir} has no {CHECKSUM_FILE}; refusing to load it.")
    expected: Dict[str, str] = {}
    for number, line in enumerate(sums_path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or len(parts[0]) != 64:
            raise BundleIntegrityError(f"{CHECKSUM_FILE} line {number} is malformed: {line!r}")
        expected[parts[1].lstrip("*")] = parts[0].lower()
    for name in [METADATA_FILE, *MODEL_FILES.values()]:
        if name not in expected:
            raise BundleIntegrityError(f"{name} is not listed in {CHECKSUM_FILE}; refusing to load the bundle.")
        path = bundle_dir / name
        if not path.is_file():
            raise BundleIntegrityError(f"Model file {name} is missing from {bundle_dir}.")
        if sha256_of(path) != expected[name]:
            raise BundleIntegrityError(
                f"Model file {name} does not match its SHA-256 checksum: it is corrupt or has been "
                "modified. Refusing to load it; reinstall the bundle."
            )


def read_metadata(bundle_dir: Union[str, Path]) -> BundleMetadata:
    """Read metadata.json (call verify_checksums first when the file will be trusted)."""
    path = Path(bundle_dir) / METADATA_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise BundleIntegrityError(f"{METADATA_FILE} is missing from {bundle_dir}.") from error
    except json.JSONDecodeError as error:
        raise BundleError(f"{METADATA_FILE} is not valid JSON: {error}") from error
    return BundleMetadata.from_json(raw)


def shipped_bundles(models_dir: Union[str, Path, None] = None) -> List[Path]:
    """The bundle folders (each holding metadata.json) under ``models_dir``, by name.

    ``models_dir`` defaults to the package's shipped models; tests pass their own.
    """
    root = Path(models_dir) if models_dir is not None else shipped_models_dir()
    if not root.is_dir():
        return []
    return sorted(path for path in root.iterdir() if (path / METADATA_FILE).is_file())


def default_bundle_dir(models_dir: Union[str, Path, None] = None) -> Path:
    """The ``DEFAULT_BUNDLE_NAME`` bundle when it is shipped, otherwise the first shipped bundle.

    The fallback keeps every front-end working while the default bundle is not (yet) installed.
    With no bundle at all, the default's path is returned and loading it names the missing folder.
    """
    root = Path(models_dir) if models_dir is not None else shipped_models_dir()
    bundles = shipped_bundles(root)
    names = [path.name for path in bundles]
    if DEFAULT_BUNDLE_NAME in names:
        return root / DEFAULT_BUNDLE_NAME
    return bundles[0] if bundles else root / DEFAULT_BUNDLE_NAME


def resolve_bundle(name_or_path: Union[str, Path, None] = None, models_dir: Union[str, Path, None] = None) -> Path:
    """A shipped bundle's folder from its name, or a bundle folder's path; None gives the default.

    A shipped name wins over a folder of the same name in the working directory.
    """
    if name_or_path is None or str(name_or_path) == "":
        return default_bundle_dir(models_dir)
    bundles = shipped_bundles(models_dir)
    for path in bundles:
        if path.name == str(name_or_path):
            return path
    candidate = Path(name_or_path).expanduser()
    if candidate.is_dir():
        return candidate
    available = ", ".join(path.name for path in bundles) or "none"
    raise BundleError(f"No model bundle named {str(name_or_path)!r} and no such folder. "
                      f"Shipped bundles: {available}; or give the path of a bundle folder.")


def resolve_device(requested: str = "auto") -> Tuple[str, Optional[str]]:
    """Choose the torch device; returns (device, warning or None).

    ``auto`` takes CUDA when it is available. An explicit ``cpu`` is honoured even on a GPU
    machine; an explicit ``cuda`` without a usable GPU falls back to CPU with a warning.
    """
    import torch

    requested = (requested or "auto").lower()
    if requested not in DEVICE_CHOICES and not requested.startswith("cuda:"):
        raise ValueError(f"Unknown device {requested!r}; choose one of {', '.join(DEVICE_CHOICES)}.")
    if requested == "cpu":
        return "cpu", None
    if torch.cuda.is_available():
        return ("cuda" if requested == "auto" else requested), None
    if requested == "auto":
        return "cpu", None
    return "cpu", f"CUDA was requested but is not available ({_cuda_unavailable_reason()}); running on CPU."


def _cuda_unavailable_reason() -> str:
    import torch

    if torch.version.cuda is None:
        return "this PyTorch build has no CUDA support"
    return "no CUDA device found"


@dataclass
class ModelBundle:
    """The three TorchScript networks, on one device, with their metadata."""

    directory: Path
    metadata: BundleMetadata
    classifier: "torch.jit.ScriptModule"
    generator_pos: "torch.jit.ScriptModule"
    generator_neg: "torch.jit.ScriptModule"
    device: str
    warnings: List[str] = field(default_factory=list)


_cache: Dict[Tuple[str, str], Tuple[Tuple[Any, ...], ModelBundle]] = {}
_cache_lock = threading.Lock()


def _file_stamp(bundle_dir: Path) -> Tuple[Any, ...]:
    names = [CHECKSUM_FILE, METADATA_FILE, *MODEL_FILES.values()]
    stamp = []
    for name in names:
        try:
            status = (bundle_dir / name).stat()
            stamp.append((name, status.st_mtime_ns, status.st_size))
        except FileNotFoundError:
            stamp.append((name, None, None))
    return tuple(stamp)


def load_bundle(bundle_dir: Union[str, Path, None] = None, device: str = "auto") -> ModelBundle:
    """Verify and load a bundle; cached per (folder, device) until a file changes on disk."""
    bundle_dir = Path(bundle_dir) if bundle_dir is not None else default_bundle_dir()
    if not bundle_dir.is_dir():
        raise BundleError(f"Model bundle folder not found: {bundle_dir}")
    resolved_device, device_warning = resolve_device(device)
    key = (str(bundle_dir.resolve()), resolved_device)
    stamp = _file_stamp(bundle_dir)
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None and cached[0] == stamp:
            bundle = cached[1]
        else:
            bundle = _verify_and_load(bundle_dir, resolved_device)
            _cache[key] = (stamp, bundle)
    if device_warning:
        # The warning belongs to this request (cuda asked for, cpu given), not to the cached bundle.
        logger.warning(device_warning)
        bundle = replace(bundle, warnings=[device_warning])
    return bundle


def _verify_and_load(bundle_dir: Path, device: str) -> ModelBundle:
    import torch

    verify_checksums(bundle_dir)
    metadata = read_metadata(bundle_dir)
    networks = {}
    for role, filename in MODEL_FILES.items():
        try:
            module = torch.jit.load(str(bundle_dir / filename), map_location=device)
        except RuntimeError as error:
            raise BundleError(f"Model file {filename} could not be loaded by TorchScript: {error}") from error
        networks[role] = module.eval()
    return ModelBundle(directory=bundle_dir, metadata=metadata, device=device, **networks)


def clear_bundle_cache() -> None:
    """Forget loaded bundles (frees GPU memory; the next load verifies again)."""
    with _cache_lock:
        _cache.clear()
