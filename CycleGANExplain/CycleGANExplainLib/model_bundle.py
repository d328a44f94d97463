"""Loading the model bundle (docs/architecture.md, contract 3).

A bundle is a folder holding ``classifier.pt``, ``generator_pos.pt``, ``generator_neg.pt``
(TorchScript), ``metadata.json`` and ``SHA256SUMS``. Before anything is deserialised, the bundle
must be one the package ships or one the user allowed (``bundle_trust``), and every file must
match SHA256SUMS (no symbolic links, no entry twice). Each file is read once, and its checksum,
the bundle's trust and the network are all taken from those bytes, so a file swapped on disk in
between is never the one that runs. After loading, the metadata is validated
field by field and each network runs once on a dummy batch, so that a bundle that cannot work is
refused at load, naming the field or the network, rather than failing on a patient's CT.

torch is imported inside functions only: inside Slicer it comes from the PyTorch extension and
must not be needed just to import this module.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import stat
import threading
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple, Union

from .bundle_trust import known_bundle_name, unknown_bundle_message, unknown_bundle_warning
from .package_resources import models_dir as shipped_models_dir

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

logger = logging.getLogger(__name__)
# TorchScript is the bundle format by design (docs/architecture.md, contract 3); torch 2.13 and newer
# say on every load that torch.jit.load is deprecated. Only that message, from the call made here.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.load` is deprecated", category=FutureWarning,
                        module=r"torch\.jit")

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


class UntrustedBundleError(BundleError):
    """The bundle is not one the package ships, and the user has not allowed it."""


# What a bundle's metadata may say: the networks are trained at one patch size, so anything
# outside these ranges is a broken file, not a different model.
PATCH_SIZE_RANGE_PX = (16, 512)
PATCH_EXTENT_RANGE_MM = (5.0, 300.0)
HU_RANGE = (-3100.0, 35000.0)


def _field_error(name: str, value: Any, expected: str) -> BundleError:
    found = "missing" if value is None else repr(value)
    return BundleError(f"{METADATA_FILE}: {name} is {found}; expected {expected}.")


def _number(raw: Dict[str, Any], path: str, low: float, high: float, integer: bool = False) -> float:
    value: Any = raw
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            raise BundleError(f"{METADATA_FILE}: {path} is missing.")
        value = value[key]
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise _field_error(path, value, f"{kind} from {low:g} to {high:g}")
    if not (math.isfinite(value) and low <= value <= high):
        raise _field_error(path, value, f"{kind} from {low:g} to {high:g}")
    return value


def _validated_fields(raw: Any) -> Dict[str, Any]:
    """The contract's fields of metadata.json, each checked for type and range."""
    if not isinstance(raw, dict):
        raise BundleError(f"{METADATA_FILE} must hold a JSON object, not {type(raw).__name__}.")
    for key in ("name", "version"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise _field_error(key, raw.get(key), "a non-empty string")
    if not isinstance(raw.get("trained"), bool):
        raise _field_error("trained", raw.get("trained"), "true or false (a JSON boolean, not a string)")
    window = (raw.get("intensity") or {}).get("hu_window") if isinstance(raw.get("intensity"), dict) else None
    if (not isinstance(window, list) or len(window) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in window)
            or not HU_RANGE[0] <= window[0] < window[1] <= HU_RANGE[1]):
        raise _field_error("intensity.hu_window", window,
                           f"[low, high] in HU with {HU_RANGE[0]:g} <= low < high <= {HU_RANGE[1]:g}")
    classes = raw.get("classes")
    if (not isinstance(classes, list) or len(classes) != 2 or not all(isinstance(c, str) for c in classes)
            or len(set(classes)) != 2 or "malignant" not in classes):
        raise _field_error("classes", classes, 'two distinct class names, one of them "malignant"')
    return {
        "patch_size_px": int(_number(raw, "patch.size_px", *PATCH_SIZE_RANGE_PX, integer=True)),
        "patch_extent_mm": float(_number(raw, "patch.extent_mm", *PATCH_EXTENT_RANGE_MM)),
        "hu_window": (float(window[0]), float(window[1])),
        "class_names": tuple(classes),
    }


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
        summary = str(self.raw.get("summary") or "Trained; see metadata.json for the training data and evaluation.")
        return f"{summary} {self.limitations}." if self.limitations else summary

    @property
    def limitations(self) -> str:
        """Where the bundle must not be used (metadata.json's "limitations", kept apart from the
        summary that `evaluate --attach` rewrites), without its final full stop; "" when none."""
        return str(self.raw.get("limitations") or "").strip().rstrip(".")

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
        headline = f"{heading}: {'; '.join(figures)}; targets missed: {', '.join(missed) if missed else 'none'}"
        # Wherever the figures are shown (bundles listing, web page, module help), so is where they do not hold.
        return f"{headline}; {self.limitations}" if self.limitations else headline

    @classmethod
    def from_json(cls, raw: Any) -> "BundleMetadata":
        """Validated metadata; BundleError naming the first field that is missing or out of range."""
        fields = _validated_fields(raw)
        return cls(name=raw["name"], version=raw["version"], trained=raw["trained"],
                   malignant_index=fields["class_names"].index("malignant"), raw=raw, **fields)


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


def _refuse_links(bundle_dir: Path, name: str) -> Path:
    path = bundle_dir / name
    if path.is_symlink():
        raise BundleIntegrityError(f"{name} in {bundle_dir} is a symbolic link; a bundle must hold its own files. "
                                   "Refusing to load it.")
    return path


def _read_bundle_file(bundle_dir: Path, name: str) -> Optional[bytes]:
    """The bytes of one bundle file, read once (None when it is missing); never through a link.

    O_NOFOLLOW also refuses a link swapped in after the is_symlink check (where the platform has it).
    """
    path = _refuse_links(bundle_dir, name)
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None
    except OSError as error:  # ELOOP: a link after all; EISDIR and the like: not a file
        raise BundleIntegrityError(f"{name} in {bundle_dir} cannot be read as a bundle file ({error.strerror}); "
                                   "refusing to load the bundle.") from error
    with os.fdopen(descriptor, "rb") as stream:
        if not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
            raise BundleIntegrityError(f"{name} in {bundle_dir} is not a regular file; refusing to load the bundle.")
        return stream.read()


def _read_checksums(bundle_dir: Path) -> Tuple[str, Dict[str, str]]:
    """The SHA-256 of SHA256SUMS (what bundle_trust knows) and the checksums it lists, from one read."""
    data = _read_bundle_file(bundle_dir, CHECKSUM_FILE)
    if data is None:
        raise BundleIntegrityError(f"Model bundle {bundle_dir} has no {CHECKSUM_FILE}; refusing to load it.")
    expected: Dict[str, str] = {}
    for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or len(parts[0]) != 64:
            raise BundleIntegrityError(f"{CHECKSUM_FILE} line {number} is malformed: {line!r}")
        name = parts[1].lstrip("*")
        if name in expected:
            raise BundleIntegrityError(f"{CHECKSUM_FILE} lists {name} twice (line {number}); refusing to load the bundle.")
        expected[name] = parts[0].lower()
    return hashlib.sha256(data).hexdigest(), expected


def _verified_contents(bundle_dir: Path, expected: Dict[str, str]) -> Dict[str, bytes]:
    """Each bundle file's bytes, checked against ``expected``: the bytes that are then parsed and
    deserialised, so a file swapped after the check is never the one loaded."""
    contents: Dict[str, bytes] = {}
    for name in [METADATA_FILE, *MODEL_FILES.values()]:
        if name not in expected:
            raise BundleIntegrityError(f"{name} is not listed in {CHECKSUM_FILE}; refusing to load the bundle.")
        data = _read_bundle_file(bundle_dir, name)
        if data is None:
            raise BundleIntegrityError(f"Model file {name} is missing from {bundle_dir}.")
        if hashlib.sha256(data).hexdigest() != expected[name]:
            raise BundleIntegrityError(
                f"Model file {name} does not match its SHA-256 checksum: it is corrupt or has been "
                "modified. Refusing to load it; reinstall the bundle."
            )
        contents[name] = data
    return contents


def bundle_digest(bundle_dir: Union[str, Path]) -> str:
    """SHA-256 of the bundle's SHA256SUMS: one value that names every file of the bundle (the
    loader checks each file against it), compared with bundle_trust's known digests."""
    return _read_checksums(Path(bundle_dir))[0]


def verify_checksums(bundle_dir: Union[str, Path]) -> None:
    """Raise BundleIntegrityError naming the first file that is missing, a link or altered."""
    bundle_dir = Path(bundle_dir)
    _verified_contents(bundle_dir, _read_checksums(bundle_dir)[1])


def _metadata_from_bytes(data: bytes) -> BundleMetadata:
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BundleError(f"{METADATA_FILE} is not valid JSON: {error}") from error
    except RecursionError:  # thousands of nested brackets: no metadata is built like that
        raise BundleError(f"{METADATA_FILE} is nested too deeply to be a bundle's metadata.") from None
    return BundleMetadata.from_json(raw)


def read_metadata(bundle_dir: Union[str, Path]) -> BundleMetadata:
    """Read metadata.json (call verify_checksums first when the file will be trusted)."""
    path = Path(bundle_dir) / METADATA_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError as error:
        raise BundleIntegrityError(f"{METADATA_FILE} is missing from {bundle_dir}.") from error
    return _metadata_from_bytes(data)


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


def bundle_option_help() -> str:
    """The --bundle option's help, in every command: the shipped bundles by name, and the default."""
    names = ", ".join(path.name for path in shipped_bundles()) or "none installed"
    return (f"model bundle: a shipped bundle's name ({names}) or a bundle folder's path "
            f"(default: {default_bundle_dir().name}; 'cyclegan-explain bundles' describes them)")


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
    shipped: bool = True  # one of the package's own bundles (bundle_trust); False: the user allowed it
    warnings: List[str] = field(default_factory=list)


# (folder, device) -> (files' stamps, SHA256SUMS digest, the bundle loaded from bytes matching that digest)
_cache: Dict[Tuple[str, str], Tuple[Tuple[Any, ...], str, ModelBundle]] = {}
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


def _trust_warning(bundle_dir: Path, digest: str, allow_unknown: bool) -> Optional[str]:
    if known_bundle_name(digest) is not None:
        return None
    if not allow_unknown:
        raise UntrustedBundleError(unknown_bundle_message(bundle_dir, digest))
    return unknown_bundle_warning(bundle_dir, digest)


def check_trust(bundle_dir: Path, allow_unknown: bool = False) -> Optional[str]:
    """None for a shipped bundle; the warning to show for an unknown one the user allowed.

    Raises UntrustedBundleError for an unknown bundle without ``allow_unknown``. For refusing
    early (at start-up); load_bundle decides again on the bytes it loads.
    """
    return _trust_warning(bundle_dir, bundle_digest(bundle_dir), allow_unknown)


def load_bundle(bundle_dir: Union[str, Path, None] = None, device: str = "auto",
                allow_unknown: bool = False, *, written_by_caller: bool = False) -> ModelBundle:
    """Verify and load a bundle; cached per (folder, device) until a file changes on disk.

    A bundle that the package does not ship is refused (UntrustedBundleError) unless
    ``allow_unknown``: the caller has asked the user, who trusts where it came from.
    ``written_by_caller``: the caller has just written this bundle itself (training's export and
    its re-signing after an evaluation check that what they wrote loads); no one is asked, and no
    warning says someone allowed it. Each file is read once: trust and checksums are decided on
    the bytes that are then deserialised.
    """
    bundle_dir = Path(bundle_dir) if bundle_dir is not None else default_bundle_dir()
    if not bundle_dir.is_dir():
        raise BundleError(f"Model bundle folder not found: {bundle_dir}")
    resolved_device, device_warning = resolve_device(device)
    key = (str(bundle_dir.resolve()), resolved_device)
    with _cache_lock:
        stamp = _file_stamp(bundle_dir)  # before the reads: a file changed after it is read again next time
        digest, expected = _read_checksums(bundle_dir)
        # Before anything is deserialised.
        trust_warning = None if written_by_caller else _trust_warning(bundle_dir, digest, allow_unknown)
        cached = _cache.get(key)
        if cached is not None and cached[:2] == (stamp, digest):
            bundle = cached[2]
        else:
            bundle = _load_contents(bundle_dir, _verified_contents(bundle_dir, expected), resolved_device)
            _cache[key] = (stamp, digest, bundle)
    # Warnings belong to this request (cuda asked for, cpu given; an allowed unknown bundle).
    warnings = [warning for warning in (trust_warning, device_warning) if warning]
    for warning in warnings:
        logger.warning(warning)
    return replace(bundle, shipped=known_bundle_name(digest) is not None, warnings=warnings)


def _load_contents(bundle_dir: Path, contents: Dict[str, bytes], device: str) -> ModelBundle:
    """The bundle from its verified bytes (torch.jit.load reads a file-like object as well as a path)."""
    import torch

    metadata = _metadata_from_bytes(contents[METADATA_FILE])
    networks = {}
    for role, filename in MODEL_FILES.items():
        try:
            module = torch.jit.load(io.BytesIO(contents[filename]), map_location=device)
        except RuntimeError as error:
            raise BundleError(f"Model file {filename} could not be loaded by TorchScript: {error}") from error
        networks[role] = module.eval()
    _check_networks_run(networks, metadata, device)
    return ModelBundle(directory=bundle_dir, metadata=metadata, device=device, **networks)


def _check_networks_run(networks: Dict[str, Any], metadata: BundleMetadata, device: str) -> None:
    """Run each network once on a dummy batch of two patches; BundleError naming the one that
    fails or gives outputs of the wrong shape, or non-finite ones."""
    import torch

    size = metadata.patch_size_px
    dummy = torch.linspace(-1.0, 1.0, 2 * size * size, device=device).reshape(2, 1, size, size)
    expected = {"classifier": (2, len(metadata.class_names)), "generator_pos": (2, 1, size, size),
                "generator_neg": (2, 1, size, size)}
    for role, shape in expected.items():
        filename = MODEL_FILES[role]
        try:
            with torch.inference_mode(), torch.jit.optimized_execution(False):  # as inference.run_networks
                output = networks[role](dummy)
        except Exception as error:  # noqa: BLE001 - any failure of foreign code is the bundle's fault
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise BundleError(f"Model file {filename} fails on a {size}x{size} patch batch "
                              f"({metadata.patch_size_px} px, from {METADATA_FILE}): {first_line}") from error
        if not isinstance(output, torch.Tensor) or tuple(output.shape) != shape:
            got = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise BundleError(f"Model file {filename} returns {got} for a batch of shape {tuple(dummy.shape)}; "
                              f"expected {shape}.")
        if not bool(torch.isfinite(output).all()):
            raise BundleError(f"Model file {filename} returns NaN or infinite values on a dummy batch.")


def clear_bundle_cache() -> None:
    """Forget loaded bundles (frees GPU memory; the next load verifies again)."""
    with _cache_lock:
        _cache.clear()
