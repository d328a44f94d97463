"""Export trained (or, for the placeholder bundle, random) networks as a model bundle.

Writes the layout of docs/architecture.md, contract 3 and loads the result back with the core's loader, so
a bundle that the module could not use is never left behind as if it were good.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np
import torch
from torch import nn

from CycleGANExplainLib.intensity import DEFAULT_HU_WINDOW, hu_change_to_normalised
from CycleGANExplainLib.model_bundle import (
    METADATA_FILE, MODEL_FILES, TRAINING_DATA_SOURCES, ModelBundle, load_bundle, sha256_of, verify_checksums, write_checksums)
from CycleGANExplainLib.networks import MalignancyClassifier, UNetGenerator
from CycleGANExplainLib.notices import INTENDED_USE, LIDC_IDRI_CITATIONS, LIDC_IDRI_LICENCE
from CycleGANExplainLib.patch_sampling import PATCH_EXTENT_MM, PATCH_SIZE_PX

from .checkpoint import load_checkpoint
from .dataset import MANIFEST_FILE, PreparedDataset, load_prepared

def base_metadata(
    name: str,
    version: str,
    trained: bool,
    classifier_width: int,
    generator_width: int,
    hu_window=DEFAULT_HU_WINDOW,
    residual_generators: bool = False,
    change_deadband_hu: float = 0.0,
    change_gain: float = 1.0,
) -> Dict[str, Any]:
    """The metadata every bundle carries; training adds its data, commands and evaluation."""
    generator = {"name": "UNetGenerator", "width": generator_width,
                 "stage_widths": [generator_width * 2**s for s in range(4)],
                 "output": "tanh(image), as the paper"}
    if residual_generators:
        generator.update(residual_generator_output(change_deadband_hu, change_gain))
    return {
        "name": name,
        "version": version,
        "trained": trained,
        "intended_use": INTENDED_USE,
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
            "generator": generator,
        },
        "training_data": None,
        "evaluation": None,
        "torch_version": torch.__version__.split("+")[0],
    }


def residual_generator_output(change_deadband_hu: float, change_gain: float) -> Dict[str, Any]:
    """The generator metadata that says what a residual generator adds to its input."""
    change = f"softshrink(tanh(change), {change_deadband_hu:g} HU)" if change_deadband_hu else "tanh(change)"
    notes = ["residual"]
    if change_deadband_hu:
        notes.append(f"changes under {change_deadband_hu:g} HU dropped")
    described = {"change_deadband_hu": float(change_deadband_hu)}
    if change_gain != 1.0:
        change = f"{change_gain:g} * {change}"
        notes.append(f"change multiplied by {change_gain:g} at export")
        described["change_gain"] = float(change_gain)
    return {"output": f"x + {change}, clipped to [-1, 1] ({'; '.join(notes)})", **described}


def _torchscript(role: str, module: nn.Module, patch_size_px: int) -> torch.jit.ScriptModule:
    """The network as TorchScript. The generators are traced, not scripted: scripting nn.Upsample
    compiles every interpolation mode of F.interpolate into the file, including ops that older torch
    lacks (aten::_upsample_lanczos2d_aa, new in 2.13), while a trace records only the nearest-neighbour
    upsampling they run, so the bundle loads on the older torch of some Slicer platforms. Their
    forward has no branch on the data, so the trace is the network; export checks it against the
    module on two batch sizes."""
    module = module.cpu().eval()
    if not role.startswith("generator"):
        return torch.jit.script(module)
    with torch.no_grad():
        example = torch.rand(2, 1, patch_size_px, patch_size_px) * 2 - 1
        with warnings.catch_warnings():  # tracing is TorchScript's, deprecated with it (see model_bundle)
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.trace", category=FutureWarning)
            traced = torch.jit.trace(module, example, check_trace=False)
        for batch in (torch.rand(1, 1, patch_size_px, patch_size_px), torch.rand(5, 1, patch_size_px, patch_size_px)):
            batch = batch * 2 - 1
            if not torch.allclose(traced(batch), module(batch), atol=1e-6):
                raise RuntimeError(f"The traced {role} differs from the network; it cannot be exported by tracing.")
    return traced


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
            _torchscript(role, network, int(metadata["patch"]["size_px"])).save(str(staging / MODEL_FILES[role]))
        (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=False) + "\n")
        write_checksums(staging)
        load_bundle(staging, "cpu", written_by_caller=True)  # refuses a bundle the core cannot load
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.chmod(0o755)  # mkdtemp makes it private; a bundle is meant to be shared
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def generators_of_bundle(bundle: ModelBundle,
                         change_gain: Optional[float] = None) -> Tuple[UNetGenerator, UNetGenerator]:
    """A loaded bundle's G+ and G- as UNetGenerator modules (the architecture its metadata names),
    with the bundle's weights and BatchNorm statistics, in eval mode on CPU; ``change_gain``
    replaces the bundle's own."""
    architecture = bundle.metadata.raw.get("architecture", {}).get("generator", {})
    residual = "residual" in architecture.get("output", "")
    deadband = hu_change_to_normalised(float(architecture.get("change_deadband_hu", 0.0)), bundle.metadata.hu_window)
    gain = float(architecture.get("change_gain", 1.0)) if change_gain is None else float(change_gain)
    generators = []
    for exported in (bundle.generator_pos, bundle.generator_neg):
        generator = UNetGenerator(int(architecture["width"]), residual, deadband, gain)
        generator.load_state_dict({key: value.cpu() for key, value in exported.state_dict().items()})
        generators.append(generator.eval())
    return generators[0], generators[1]


def retraced_bundle(bundle_dir: Union[str, Path], out_dir: Union[str, Path], version: str,
                    allow_unknown_bundle: bool = False) -> Path:
    """A copy of a bundle whose generators are exported again by tracing (see _torchscript), so that
    a bundle scripted by an earlier export loads on older torch. The weights are the same, and the
    copy's networks are checked to compute the original's outputs; metadata says so."""
    bundle = load_bundle(bundle_dir, "cpu", allow_unknown=allow_unknown_bundle)
    metadata = json.loads((Path(bundle_dir) / METADATA_FILE).read_text())
    previous = metadata["version"]
    metadata.update(version=version, torch_version=torch.__version__.split("+")[0])
    metadata["export_history"] = [*metadata.get("export_history", []), (
        f"{version}: {previous}'s networks, generators re-exported by tracing so that torch older than 2.13 loads "
        f"them; outputs checked equal to {previous}'s; its evaluation applies unchanged")]
    generator_pos, generator_neg = generators_of_bundle(bundle)
    out = export_bundle(bundle.classifier, generator_pos, generator_neg, out_dir, metadata)
    copy = load_bundle(out, "cpu", allow_unknown=True)
    x = torch.rand(4, 1, *([int(metadata["patch"]["size_px"])] * 2)) * 2 - 1
    with torch.no_grad():
        for role in ("classifier", "generator_pos", "generator_neg"):
            if not torch.allclose(getattr(copy, role)(x), getattr(bundle, role)(x), atol=1e-5):
                shutil.rmtree(out)
                raise RuntimeError(f"The re-exported {role} does not compute the original's outputs.")
    return out


def bundle_with_change_gain(bundle_dir: Union[str, Path], out_dir: Union[str, Path], version: str,
                            change_gain: float, command: Optional[str] = None, overwrite: bool = False,
                            allow_unknown_bundle: bool = False) -> Path:
    """A copy of a bundle with a residual generator's change multiplied by ``change_gain`` (see
    UNetGenerator): the same weights, each counterfactual moved further along (or back along) the
    change its generator learned. Pixels the original leaves unchanged stay unchanged and every
    change keeps its sign; both are checked. The original's evaluation does not apply: the copy
    carries none until ``evaluate --attach``."""
    bundle = load_bundle(bundle_dir, "cpu", allow_unknown=allow_unknown_bundle)
    metadata = json.loads((Path(bundle_dir) / METADATA_FILE).read_text())
    generator_metadata = metadata["architecture"]["generator"]
    if "residual" not in generator_metadata.get("output", ""):
        raise ValueError(f"{bundle_dir}: its generators paint the image (not residual); only a residual "
                         "generator's change can be multiplied.")
    previous = metadata["version"]
    previous_gain = float(generator_metadata.get("change_gain", 1.0))
    generator_pos, generator_neg = generators_of_bundle(bundle, change_gain)
    generator_metadata.pop("change_gain", None)
    generator_metadata.update(residual_generator_output(generator_metadata.get("change_deadband_hu", 0.0),
                                                        float(change_gain)))
    metadata.update(version=version, torch_version=torch.__version__.split("+")[0], evaluation=None)
    metadata.pop("summary", None)
    metadata["export_history"] = [*metadata.get("export_history", []), (
        f"{version}: {previous}'s networks with the generators' change multiplied by {change_gain:g} "
        f"(was {previous_gain:g}); {previous}'s evaluation does not apply")]
    if command and isinstance(metadata.get("training_data"), dict):
        metadata["training_data"]["commands"] = [*metadata["training_data"].get("commands", []), command]
    out = export_bundle(bundle.classifier, generator_pos, generator_neg, out_dir, metadata, overwrite=overwrite)
    _check_same_changes_scaled(bundle, load_bundle(out, "cpu", allow_unknown=True), float(change_gain), out)
    return out


def _check_same_changes_scaled(original: ModelBundle, copy: ModelBundle, change_gain: float, out: Path) -> None:
    """Removes ``out`` and raises unless the copy's generators change the pixels the original's
    change, in the same direction, and its classifier is the original's."""
    x = torch.rand(4, 1, *([original.metadata.patch_size_px] * 2)) * 2 - 1
    with torch.no_grad():
        if not torch.allclose(copy.classifier(x), original.classifier(x), atol=1e-5):
            shutil.rmtree(out)
            raise RuntimeError("The re-exported classifier does not compute the original's outputs.")
        for role in ("generator_pos", "generator_neg"):
            before, after = getattr(original, role)(x) - x, getattr(copy, role)(x) - x
            # Float rounding leaves a change just above the deadband at ~1e-5 in one and 0 in the
            # other: pixels count as unchanged below 1e-4 (0.07 HU in the default window, far below
            # any deadband), times the gain in the copy.
            unchanged = before.abs() <= 1e-4
            differs = torch.where(unchanged, after.abs() > 1e-4 * max(change_gain, 1.0),
                                  torch.sign(before) != torch.sign(after))
            if bool(differs.any()):
                shutil.rmtree(out)
                raise RuntimeError(f"The re-exported {role} does not change the pixels the original changes, "
                                   "in the same direction.")


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


def export_from_checkpoints(
    classifier_path: Path,
    cyclegan_path: Path,
    dataset_dir: Path,
    out_dir: Path,
    name: str,
    version: str,
    overwrite: bool = False,
    command: Optional[str] = None,
    generators_path: Optional[Path] = None,
    change_deadband_hu: Optional[float] = None,
) -> Path:
    """Bundle the trained networks with metadata saying how, on what and for how long they were trained.

    Refuses checkpoints that do not belong together (another classifier, dataset or HU window).
    ``generators_path``, one of the run's validation checks (select-generators' choice), is
    exported instead of the pair the run kept as best. ``change_deadband_hu`` sets the generators'
    deadband (UNetGenerator) instead of the one the run trained with; the metadata says which.
    """
    from .train_classifier import load_classifier

    classifier_state = load_checkpoint(classifier_path, "classifier")
    cyclegan_state = load_checkpoint(cyclegan_path, "cyclegan")
    dataset = load_prepared(dataset_dir)
    _check_checkpoints_belong_together(classifier_path, classifier_state, cyclegan_path, cyclegan_state, dataset,
                                       dataset_dir)
    from .train_cyclegan import change_deadband_hu_of

    trained_deadband = change_deadband_hu_of(cyclegan_state)
    deadband = trained_deadband if change_deadband_hu is None else float(change_deadband_hu)
    metadata = base_metadata(name, version, trained=True, classifier_width=classifier_state["width"],
                             generator_width=cyclegan_state["width"], hu_window=classifier_state["hu_window"],
                             residual_generators=bool(cyclegan_state.get("residual_generators", False)),
                             change_deadband_hu=deadband)
    check = _validation_check_of(cyclegan_path, generators_path) if generators_path else None
    metadata["training_data"] = _training_data(classifier_state, cyclegan_state, dataset, dataset_dir, command, check)
    metadata["training_data"]["cyclegan"]["change_deadband_hu"] = {
        "trained_with": trained_deadband, "exported_with": deadband,
        "note": f"set at export; the networks were trained with {trained_deadband:g} HU" if deadband != trained_deadband
                else "as trained"}
    # Every source here is LIDC-IDRI (images or its readers' contours): CC BY 3.0 asks for attribution.
    metadata["data_attribution"] = {"licence": LIDC_IDRI_LICENCE, "citations": list(LIDC_IDRI_CITATIONS)}
    generator_pos, generator_neg = _generators_for_export(classifier_state, cyclegan_state, dataset,
                                                          metadata["training_data"]["cyclegan"], check, deadband)
    return export_bundle(load_classifier(classifier_state), generator_pos, generator_neg, out_dir, metadata,
                         overwrite=overwrite)


def classifier_checkpoint_from_bundle(bundle_dir: Path, dataset_dir: Path, command: Optional[str] = None,
                                     allow_unknown: bool = False) -> Dict[str, Any]:
    """A bundle's classifier as a train-classifier checkpoint, so that new generators can be trained
    against the very classifier a bundle ships (and its evaluated figures carry over).

    Everything but the weights comes from the bundle's training_data (width, HU window, the
    classifier's config); the validation patients are recomputed from that config, exactly as
    train_classifier drew them. Refused unless the bundle was trained on ``dataset_dir``'s patches.
    """
    from CycleGANExplainLib.attribution_methods import eager_classifier
    from CycleGANExplainLib.model_bundle import load_bundle

    from .train_classifier import fit_and_held_out, validation_split_seed

    bundle = load_bundle(bundle_dir, device="cpu", allow_unknown=allow_unknown)
    training = bundle.metadata.raw.get("training_data") or {}
    recorded = training.get("classifier") or {}
    dataset = load_prepared(dataset_dir)
    if (training.get("dataset") or {}).get("patches_sha256") != dataset.manifest.get("patches_sha256"):
        raise ValueError(f"The bundle {bundle_dir} was not trained on the prepared dataset {dataset_dir}.")
    settings = recorded.get("config")
    if not isinstance(settings, dict):
        raise ValueError(f"The bundle {bundle_dir} does not record its classifier's training config.")
    fit, held_out = fit_and_held_out(dataset, float(settings["validation_fraction"]), validation_split_seed(settings))
    state_dict = {name: value.detach().cpu().clone() for name, value in eager_classifier(bundle).state_dict().items()}
    return {
        "kind": "classifier", "state_dict": state_dict, "width": int(recorded["width"]), "architecture": "paper",
        "hu_window": list(bundle.metadata.hu_window), "config": {"hu_window": list(bundle.metadata.hu_window),
                                                                  "classifier": settings},
        "epoch": recorded.get("best_epoch"), "epochs_run": recorded.get("epochs_run"),
        "validation_auc": recorded.get("validation_auc"), "validation_auc_by_fill": recorded.get("validation_auc_by_fill"),
        "validation_selection": recorded.get("validation_selection"), "class_weights": recorded.get("class_weights"),
        "counts": recorded.get("counts"), "validation_patients": sorted(np.unique(held_out.patient_ids).tolist()),
        "patches_sha256": dataset.manifest.get("patches_sha256"), "seed": recorded.get("seed"),
        "seconds": recorded.get("wall_time_seconds"), "imported_from_bundle": f"{bundle.metadata.name} "
                                                                             f"{bundle.metadata.version}",
        "command": command,
    }


def _check_checkpoints_belong_together(classifier_path: Path, classifier_state: Dict[str, Any], cyclegan_path: Path,
                                       cyclegan_state: Dict[str, Any], dataset: PreparedDataset,
                                       dataset_dir: Path) -> None:
    if cyclegan_state["classifier_sha256"] != sha256_of(classifier_path):
        raise ValueError(f"{cyclegan_path} was trained against another classifier than {classifier_path}.")
    for role, state in (("classifier", classifier_state), ("CycleGAN", cyclegan_state)):
        if state["patches_sha256"] != dataset.manifest["patches_sha256"]:
            raise ValueError(f"The {role} checkpoint was trained on another dataset than {dataset_dir}.")
    if list(cyclegan_state["hu_window"]) != list(classifier_state["hu_window"]):
        raise ValueError("The classifier and CycleGAN checkpoints use different HU windows.")


def _scalar_items(values: Dict[str, Any]) -> Dict[str, Any]:
    return {key: value for key, value in values.items() if isinstance(value, (str, int, float, bool)) or value is None}


def _validation_check_of(cyclegan_path: Path, check_path: Path) -> Dict[str, Any]:
    """The saved validation check, refused unless it is one of this run's (in its validation-checks folder)."""
    from .train_cyclegan import VALIDATION_CHECKS_DIR

    runs_checks = (Path(cyclegan_path).resolve().parent / VALIDATION_CHECKS_DIR)
    if Path(check_path).resolve().parent != runs_checks:
        raise ValueError(f"{check_path} is not one of the validation checks of {cyclegan_path} (they are in "
                         f"{runs_checks}).")
    return load_checkpoint(check_path, "generator-check")


def _training_data(classifier_state: Dict[str, Any], cyclegan_state: Dict[str, Any], dataset: PreparedDataset,
                   dataset_dir: Path, command: Optional[str], check: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The metadata's training_data: the dataset, both trainings' settings and results, the commands."""
    manifest = dataset.manifest
    best = cyclegan_state.get("best") or {}
    if check is not None:
        best = check
        chosen_by = f"validation check at step {check['step']} of {cyclegan_state['step']}, chosen by select-generators"
    else:
        chosen_by = (f"best validation score (generator_validation), step {best['step']} of {cyclegan_state['step']}"
                     if best else "the last step's")
    return {
        "dataset": {**_scalar_items(manifest), "counts": manifest.get("counts"),
                    "manifest_sha256": sha256_of(Path(dataset_dir) / MANIFEST_FILE)},
        "classifier": {
            "seed": classifier_state["seed"],
            "width": classifier_state["width"],
            "epochs_run": classifier_state["epochs_run"],
            "best_epoch": classifier_state["epoch"],
            "validation_auc": classifier_state["validation_auc"],
            "validation_auc_by_fill": classifier_state.get("validation_auc_by_fill"),
            "validation_selection": classifier_state.get("validation_selection"),
            "class_weights": classifier_state.get("class_weights"),
            "loss_weighting": classifier_state.get("loss_weighting", "inverse class frequency"),
            "validation_concordance_by_fill": classifier_state.get("validation_concordance_by_fill"),
            "counts": classifier_state["counts"],
            "wall_time_seconds": classifier_state["seconds"],
            "config": classifier_state["config"]["classifier"],
        },
        "cyclegan": {
            "seed": cyclegan_state["seed"],
            "width": cyclegan_state["width"],
            "steps": cyclegan_state["step"],
            "exported_step": best.get("step", cyclegan_state["step"]),
            "exported_generators": chosen_by,
            "validation": best.get("validation"),
            "wall_time_seconds": cyclegan_state["seconds"],
            "warm_start": cyclegan_state.get("warm_start"),
            "activation_twins": cyclegan_state.get("activation_twins", []),
            "config": cyclegan_state["config"]["cyclegan"],
        },
        "commands": [classifier_state["command"], *cyclegan_state["commands"], command],
    }


def _generators_for_export(classifier_state: Dict[str, Any], cyclegan_state: Dict[str, Any],
                           dataset: PreparedDataset, cyclegan_metadata: Dict[str, Any],
                           check: Optional[Dict[str, Any]] = None,
                           change_deadband_hu: Optional[float] = None) -> Tuple[nn.Module, nn.Module]:
    """G+ and G- with their BatchNorm statistics recomputed on the real training patches (see
    recompute_batchnorm_statistics for why the ones accumulated during training do not fit); says
    so in ``cyclegan_metadata``."""
    from .train_cyclegan import batchnorm_patches, load_generators, recompute_batchnorm_statistics, split_like_classifier

    fit, _ = split_like_classifier(dataset, classifier_state)
    training_images = batchnorm_patches(fit, classifier_state["hu_window"])
    batch_size = cyclegan_state["config"]["cyclegan"]["batch_size"]
    generator_pos, generator_neg = (recompute_batchnorm_statistics(generator, training_images, batch_size)
                                    for generator in load_generators(cyclegan_state, check=check,
                                                                    change_deadband_hu=change_deadband_hu))
    cyclegan_metadata["batchnorm_statistics"] = (
        f"recomputed at export on the {len(training_images)} real training patches of the fitting patients, "
        f"with random surrounds as in training (torch.optim.swa_utils.update_bn, batches of {batch_size})")
    return generator_pos, generator_neg


def _estimate_text(estimate: Dict[str, Any]) -> str:
    if any(estimate.get(key) is None for key in ("value", "ci_low", "ci_high")):
        return "n/a (undefined on this split)"
    return "{:.3f} [{:.3f}, {:.3f}]".format(estimate["value"], estimate["ci_low"], estimate["ci_high"])


def evaluation_summary(evaluation: Dict[str, Any]) -> Dict[str, Any]:
    """The headline figures of an evaluate() result, as recorded in a bundle's metadata.

    Figures are the primary condition's (the centre view as the command line samples it); the
    classifier's AUC is also given for every condition (fills, seed moved) and every target with
    its verdict.
    """
    conditions = evaluation["conditions"]
    primary = conditions[0]["key"]
    generators = evaluation["generators"]["main"][primary]
    mean, flips = generators["domain_transfer"], generators["flip_rates"]
    similarity = generators["similarity"]
    dataset = evaluation["dataset"]
    return {
        "split": dataset["split"],
        "n": dataset["n"],
        "dataset_source": dataset.get("source"),
        "dataset_manifest_sha256": dataset["manifest_sha256"],
        "condition": conditions[0]["label"],
        "classifier_auc": _estimate_text(evaluation["classifier"][primary]["auc"]),
        "classifier_auc_by_condition": {c["label"]: _estimate_text(evaluation["classifier"][c["key"]]["auc"])
                                        for c in conditions},
        "classifier_accuracy": _estimate_text(evaluation["classifier"][primary]["accuracy"]),
        "diameter_only_auc": _estimate_text(evaluation["baselines"][primary]["diameter_auc"]),
        "two_feature_auc": _estimate_text(evaluation["baselines"][primary]["two_feature_auc"]),
        "mean_malignancy": {name: _estimate_text(mean[name]) for name in ("x", "g_neg", "g_pos")},
        "flipped_to_malignant_by_g_pos": _estimate_text(flips["flipped_to_malignant"]),
        "flipped_to_benign_by_g_neg": _estimate_text(flips["flipped_to_benign"]),
        "ssim_x_g_pos": _estimate_text(similarity["ssim_x_g_pos"]),
        "ssim_x_g_neg": _estimate_text(similarity["ssim_x_g_neg"]),
        "skimage_ssim_x_g_pos": _estimate_text(similarity["skimage_ssim_x_g_pos"]),
        "skimage_ssim_x_g_neg": _estimate_text(similarity["skimage_ssim_x_g_neg"]),
        "relevance_share_within_5mm": _estimate_text(generators["relevance_shares"]["within_5mm"]),
        "targets": [{"description": target["description"], "verdict": target["verdict"],
                     "value": target["value"], "target": target["target"], "comparison": target["comparison"]}
                    for target in evaluation["targets"]],
        "targets_met": [target["description"] for target in evaluation["targets"] if target["passed"]],
        "targets_missed": [target["description"] for target in evaluation["targets"] if not target["passed"]],
    }


def summary_sentence(metadata: Dict[str, Any], summary: Dict[str, Any]) -> str:
    """One plain sentence for the module's help text and the command line: data and performance."""
    data = metadata.get("training_data") or {}
    source = (data.get("dataset") or {}).get("source") if isinstance(data, dict) else None
    trained_on = TRAINING_DATA_SOURCES.get(source, "see metadata.json")
    mean = summary["mean_malignancy"]
    return (
        f"Trained on {trained_on}. On the held-out {summary['split']} split (n = {summary['n']}): classifier "
        f"AUC {summary['classifier_auc']} (nodule diameter alone: {summary['diameter_only_auc']}); mean "
        f"malignancy output x {mean['x']}, G-(x) {mean['g_neg']}, G+(x) {mean['g_pos']}; "
        f"SSIM(x, G+(x)) {summary['ssim_x_g_pos']}, SSIM(x, G-(x)) {summary['ssim_x_g_neg']}."
    )


def attach_evaluation(bundle_dir: Union[str, Path], evaluation: Dict[str, Any], report: Optional[str] = None) -> None:
    """Record an evaluation's figures in the bundle's metadata.json and re-sign SHA256SUMS.

    The bundle is verified first: a tampered bundle is never re-signed.
    """
    bundle_dir = Path(bundle_dir)
    verify_checksums(bundle_dir)
    metadata_path = bundle_dir / METADATA_FILE
    metadata = json.loads(metadata_path.read_text())
    if evaluation["bundle"]["name"] != metadata["name"] or evaluation["bundle"]["version"] != metadata["version"]:
        raise ValueError(f"The evaluation is of {evaluation['bundle']['name']} {evaluation['bundle']['version']}, "
                         f"not of this bundle ({metadata['name']} {metadata['version']}).")
    summary = evaluation_summary(evaluation)
    if report:
        summary["report"] = report
    metadata["evaluation"] = summary
    metadata["summary"] = summary_sentence(metadata, summary)
    metadata_path.write_text(json.dumps(metadata, indent=2) + "\n")
    write_checksums(bundle_dir)
    load_bundle(bundle_dir, "cpu", written_by_caller=True)  # what was just re-signed still loads
