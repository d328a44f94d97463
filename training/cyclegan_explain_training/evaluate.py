"""Evaluate a model bundle on a prepared dataset, as the paper's Sec. 4.1 and Table 1 do.

Writes ``evaluation.json`` (every number), ``evaluation.md`` (the tables, beside the paper's
figures and the issue's targets) and ``explanations.png`` (examples after the paper's Fig. 6).
Inference goes through the module's own path: the bundle loader (checksums verified), the
bundle's HU window and ``run_networks``, so what is measured is what the module shows.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Tuple, Union

import numpy as np

from CycleGANExplainLib.explanation import run_networks
from CycleGANExplainLib.intensity import denormalise_to_hu, normalise_hu
from CycleGANExplainLib.model_bundle import ModelBundle, load_bundle, sha256_of

from .dataset import BENIGN, MALIGNANT, MANIFEST_FILE, PreparedDataset, load_prepared
from .figures import choose_examples, explanation_figure
from .losses import SSIM_DATA_RANGE, SSIM_K1, SSIM_K2, SSIM_SIGMA, SSIM_WINDOW
from .metrics import (
    DECISION_THRESHOLD, TABLE1_METRICS,
    NODULE_REGION_RADIUS_MM, SOFT_TISSUE_HU,
    Estimate, bootstrap as bootstrap_estimates, classifier_metrics, flip_rates, l1_per_image, mean_inside_masks,
    paired_t_test, roc_auc, soft_tissue_area_mm2, ssim_per_image,
)

logger = logging.getLogger(__name__)

JSON_FILE = "evaluation.json"
MARKDOWN_FILE = "evaluation.md"
FIGURE_FILE = "explanations.png"
FIGURE_EXAMPLES_PER_CLASS = 3
CONFIDENCE = 0.95

# Katzmann et al. 2021, Table 1 (value, 95 % CI). The AUC is the Sec. 4.1 text's: Table 1 prints
# .809 [.757, .860] for it, the accuracy's numbers repeated.
PAPER_TABLE1 = {
    "accuracy": (0.809, 0.757, 0.860),
    "f1": (0.801, 0.737, 0.856),
    "sensitivity": (0.813, 0.737, 0.884),
    "specificity": (0.805, 0.729, 0.866),
    "ppv": (0.790, 0.715, 0.861),
    "npv": (0.826, 0.757, 0.894),
    "informedness": (0.618, 0.514, 0.719),
    "markedness": (0.616, 0.511, 0.718),
    "mcc": (0.617, 0.511, 0.718),
    "auc": (0.800, 0.741, 0.847),
}
PAPER_AUC_NOTE = "Sec. 4.1 gives AUC .800 [.741, .847]; Table 1 prints .809 [.757, .860] (the accuracy's numbers)."
# Sec. 4.1: mean malignancy output on the test set (n = 234), and the paired t statistics.
PAPER_MEAN_MALIGNANCY = {"x": (0.470, 0.418, 0.522), "g_neg": (0.289, 0.250, 0.330), "g_pos": (0.820, 0.788, 0.848)}
PAPER_T_TESTS = {"g_pos_vs_x": {"t": 17.9, "df": 233}, "x_vs_g_neg": {"t": 14.5, "df": 233}}

METRIC_LABELS = {
    "accuracy": "Accuracy", "f1": "F1", "sensitivity": "Sensitivity", "specificity": "Specificity",
    "ppv": "PPV", "npv": "NPV", "informedness": "Informedness", "markedness": "Markedness",
    "mcc": "MCC", "auc": "AUC",
}
IMAGE_LABELS = {"x": "x", "g_neg": "G\u2212(x)", "g_pos": "G+(x)"}


@dataclass(frozen=True)
class Target:
    """A goal from the issue for the shipped bundle."""

    key: Tuple[str, str]  # (section, name) in the result
    comparison: str  # ">=" or "<="
    threshold: float
    description: str

    def check(self, value: float) -> Dict[str, Any]:
        margin = value - self.threshold if self.comparison == ">=" else self.threshold - value
        return {
            "name": self.key[1],
            "description": self.description,
            "comparison": self.comparison,
            "target": self.threshold,
            "value": value,
            "margin": margin,  # positive: met with room to spare; negative: missed by that much
            "passed": bool(margin >= 0) if math.isfinite(margin) else False,
        }


TARGETS = (
    Target(("mean_malignancy", "g_pos"), ">=", 0.85, "mean classifier output on G+(x)"),
    Target(("mean_malignancy", "g_neg"), "<=", 0.15, "mean classifier output on G\u2212(x)"),
    Target(("flip_rates", "flipped_to_malignant"), ">=", 0.90, "benign decisions turned malignant by G+"),
    Target(("flip_rates", "flipped_to_benign"), ">=", 0.90, "malignant decisions turned benign by G\u2212"),
    Target(("similarity", "ssim_x_g_pos"), ">=", 0.85, "mean SSIM(x, G+(x))"),
    Target(("similarity", "ssim_x_g_neg"), ">=", 0.85, "mean SSIM(x, G\u2212(x))"),
)


def evaluate(
    bundle_dir: Union[str, Path],
    dataset_dir: Union[str, Path],
    out_dir: Union[str, Path],
    split: str = "test",
    bootstrap: int = 1000,
    seed: int = 0,
    device: str = "auto",
    batch_size: int = 64,
) -> Dict[str, Any]:
    """Evaluate the bundle on one split; write the JSON, Markdown and figure; return the JSON's content.

    Raises BundleIntegrityError (naming the file) for a tampered bundle, ValueError for a dataset
    whose patches do not match its manifest or an empty split. Undefined values are null in the
    JSON (NaN in the computation); see metrics.py.
    """
    bundle = load_bundle(bundle_dir, device)
    dataset_dir = Path(dataset_dir)
    data = load_prepared(dataset_dir).subset(split)
    if len(data) == 0:
        raise ValueError(f"The {split!r} split of {dataset_dir} is empty.")
    metadata = bundle.metadata
    x = normalise_hu(data.images_hu, metadata.hu_window)
    logger.info("Running the networks on %d patches (%s).", len(x), bundle.device)
    outputs = run_networks(bundle, x, batch_size)
    labels = data.labels
    p_x, p_pos, p_neg = outputs["p_x"], outputs["p_pos"], outputs["p_neg"]
    per_image = {
        "ssim_x_g_pos": ssim_per_image(x, outputs["g_pos"]),
        "ssim_x_g_neg": ssim_per_image(x, outputs["g_neg"]),
        "l1_x_g_pos": l1_per_image(x, outputs["g_pos"]),
        "l1_x_g_neg": l1_per_image(x, outputs["g_neg"]),
    }
    # Size or density? What each image shows near the nodule (see metrics.soft_tissue_area_mm2).
    pixel_mm = metadata.patch_extent_mm / metadata.patch_size_px
    images_hu = {"x": data.images_hu, "g_neg": denormalise_to_hu(outputs["g_neg"], metadata.hu_window),
                 "g_pos": denormalise_to_hu(outputs["g_pos"], metadata.hu_window)}
    for name, image in images_hu.items():
        per_image[f"soft_tissue_area_mm2_{name}"] = soft_tissue_area_mm2(image, pixel_mm)
        per_image[f"mean_hu_in_mask_{name}"] = mean_inside_masks(np.clip(image, *metadata.hu_window), data.masks)
    mask_area = data.masks.reshape(len(data), -1).sum(axis=1).astype(float)

    def statistics(indices: np.ndarray) -> Dict[str, float]:
        values = {f"classifier/{name}": value for name, value in classifier_metrics(labels[indices], p_x[indices]).items()}
        diameter_auc = roc_auc(labels[indices], data.diameters_mm[indices])
        values["diameter_baseline/auc"] = diameter_auc
        values["diameter_baseline/classifier_minus_diameter_auc"] = values["classifier/auc"] - diameter_auc
        # The size the classifier can see: the nodule's area in this patch (differs from the
        # diameter on size-normalised phantoms, where the diameter is the original nodule's).
        values["diameter_baseline/mask_area_auc"] = roc_auc(labels[indices], mask_area[indices])
        for name, probabilities in (("x", p_x), ("g_neg", p_neg), ("g_pos", p_pos)):
            values[f"mean_malignancy/{name}"] = float(np.mean(probabilities[indices]))
        for name, value in flip_rates(p_x[indices], p_pos[indices], p_neg[indices]).items():
            values[f"flip_rates/{name}"] = value
        for name, per_sample in per_image.items():
            section = "similarity" if name.startswith(("ssim", "l1")) else "changes"
            values[f"{section}/{name}"] = float(np.nanmean(per_sample[indices]))
        return values

    logger.info("Bootstrapping %d resamples.", bootstrap)
    estimates = bootstrap_estimates(statistics, len(labels), bootstrap, seed, CONFIDENCE)
    result = _assemble(estimates, bundle, data, dataset_dir, split, bootstrap, seed, p_x, p_pos, p_neg)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    indices = choose_examples(labels, p_x, FIGURE_EXAMPLES_PER_CLASS, seed)
    explanation_figure(
        out_dir / FIGURE_FILE, x, outputs["g_neg"], outputs["g_pos"], p_x, p_neg, p_pos, labels, indices,
        title=f"{metadata.display_name}, {split} split; p = classifier malignancy probability",
    )
    result = _json_safe(result)
    (out_dir / JSON_FILE).write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    (out_dir / MARKDOWN_FILE).write_text(render_markdown(result))
    logger.info("Wrote %s, %s and %s to %s.", JSON_FILE, MARKDOWN_FILE, FIGURE_FILE, out_dir)
    return result


def _assemble(estimates: Dict[str, Estimate], bundle: ModelBundle, data: PreparedDataset, dataset_dir: Path,
              split: str, resamples: int, seed: int, p_x: np.ndarray, p_pos: np.ndarray,
              p_neg: np.ndarray) -> Dict[str, Any]:
    """Group the bootstrap estimates by section and add the t-tests, the paper's values and the targets."""
    sections: Dict[str, Dict[str, Any]] = {}
    for key, estimate in estimates.items():
        section, name = key.split("/")
        sections.setdefault(section, {})[name] = estimate.as_dict()
    for name, (value, low, high) in PAPER_TABLE1.items():
        sections["classifier"][name]["paper"] = {"value": value, "ci_low": low, "ci_high": high}
    for name, (value, low, high) in PAPER_MEAN_MALIGNANCY.items():
        sections["mean_malignancy"][name]["paper"] = {"value": value, "ci_low": low, "ci_high": high}
    t_tests = {"g_pos_vs_x": paired_t_test(p_pos, p_x), "x_vs_g_neg": paired_t_test(p_x, p_neg)}
    for name, test in t_tests.items():
        test["paper"] = PAPER_T_TESTS[name]
    metadata = bundle.metadata
    return {
        "bundle": {"name": metadata.name, "version": metadata.version, "trained": metadata.trained,
                   "directory": str(bundle.directory), "hu_window": list(metadata.hu_window)},
        "dataset": {
            "directory": str(dataset_dir),
            "manifest_sha256": sha256_of(dataset_dir / MANIFEST_FILE),
            "patches_sha256": data.manifest.get("patches_sha256"),
            "split": split,
            "n": int(len(data)),
            "benign": int(np.sum(data.labels == BENIGN)),
            "malignant": int(np.sum(data.labels == MALIGNANT)),
        },
        "settings": {
            "seed": seed,
            "bootstrap_resamples": resamples,
            "confidence": CONFIDENCE,
            "ci_method": "percentile bootstrap over samples; resamples where a statistic is undefined are left out "
                         "and counted in undefined_resamples",
            "decision_threshold": DECISION_THRESHOLD,
            "positive_class": "malignant",
            "device": bundle.device,
            "ssim": {"implementation": "losses.structural_similarity (MONAI SSIMLoss on images mapped from [-1, 1] to [0, 1])", "data_range": SSIM_DATA_RANGE, "k1": SSIM_K1,
                     "k2": SSIM_K2, "window": SSIM_WINDOW, "sigma": SSIM_SIGMA, "kernel": "gaussian"},
            "paper_auc_note": PAPER_AUC_NOTE,
        },
        "classifier": sections["classifier"],
        "diameter_baseline": sections["diameter_baseline"],
        "domain_transfer": {"mean_malignancy": sections["mean_malignancy"], "t_tests": t_tests},
        "flip_rates": sections["flip_rates"],
        "similarity": sections["similarity"],
        "changes": {**sections["changes"], "definition": (
            f"soft-tissue area: pixels >= {SOFT_TISSUE_HU:g} HU within {NODULE_REGION_RADIUS_MM:g} mm of the patch "
            "centre; mean HU in mask: inside the nodule's consensus mask of x, clipped to the HU window")},
        "targets": [target.check(sections[target.key[0]][target.key[1]]["value"]) for target in TARGETS],
        "files": {"json": JSON_FILE, "markdown": MARKDOWN_FILE, "figure": FIGURE_FILE},
    }


def _json_safe(value: Any) -> Any:
    """NaN and infinities become null: strict JSON has no NaN."""
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _number(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _with_ci(entry: Dict[str, Any]) -> str:
    if entry["ci_low"] is None:  # undefined in every resample
        text = _number(entry["value"])
    else:
        text = f"{_number(entry['value'])} [{_number(entry['ci_low'])}, {_number(entry['ci_high'])}]"
    if entry.get("undefined_resamples"):
        text += f" ({entry['undefined_resamples']} resamples undefined)"
    return text


def render_markdown(result: Dict[str, Any]) -> str:
    """The human-readable report of a result as ``evaluate`` returns it."""
    bundle, dataset, settings = result["bundle"], result["dataset"], result["settings"]
    lines = [
        f"# Evaluation of {bundle['name']} {bundle['version']}",
        "",
    ]
    if not bundle["trained"]:
        lines += ["**UNTRAINED bundle (random weights): these numbers only test the pipeline.**", ""]
    lines += [
        f"Split `{dataset['split']}` of `{dataset['directory']}`: n = {dataset['n']} "
        f"({dataset['benign']} benign, {dataset['malignant']} malignant); manifest SHA-256 "
        f"`{dataset['manifest_sha256']}`.",
        f"95 % CIs: {settings['ci_method']}; {settings['bootstrap_resamples']} resamples, seed {settings['seed']}. "
        f"Thresholded metrics at malignancy probability \u2265 {settings['decision_threshold']}; "
        "n/a = undefined (zero denominator or one class only).",
        "",
        "## Classifier (Table 1)",
        "",
        "| Metric | This bundle | Paper |",
        "|---|---|---|",
    ]
    for name in TABLE1_METRICS:
        entry = result["classifier"][name]
        lines.append(f"| {METRIC_LABELS[name]} | {_with_ci(entry)} | {_with_ci(entry['paper'])} |")
    baseline = result["diameter_baseline"]
    lines += [
        f"| Diameter-only AUC | {_with_ci(baseline['auc'])} | not reported |",
        f"| Classifier AUC \u2212 diameter AUC | {_with_ci(baseline['classifier_minus_diameter_auc'])} | |",
        f"| Nodule-area-in-patch (mask) AUC | {_with_ci(baseline['mask_area_auc'])} | |",
        "",
        settings["paper_auc_note"],
        "",
        "## Domain transfer (Sec. 4.1)",
        "",
        "| Mean malignancy output | This bundle | Paper |",
        "|---|---|---|",
    ]
    transfer = result["domain_transfer"]
    for name in ("x", "g_neg", "g_pos"):
        entry = transfer["mean_malignancy"][name]
        lines.append(f"| {IMAGE_LABELS[name]} | {_with_ci(entry)} | {_with_ci(entry['paper'])} |")
    lines += ["", "| Paired two-sided t-test | Mean difference | t | df | p | Paper t (df) |", "|---|---|---|---|---|---|"]
    for name, label in (("g_pos_vs_x", "G+(x) \u2212 x"), ("x_vs_g_neg", "x \u2212 G\u2212(x)")):
        test = transfer["t_tests"][name]
        p_value = "n/a" if test["p"] is None else f"{test['p']:.3g}"
        lines.append(f"| {label} | {_number(test['mean_difference'])} | {_number(test['t'])} | {test['df']} | "
                     f"{p_value} | {test['paper']['t']} ({test['paper']['df']}) |")
    flips = result["flip_rates"]
    lines += [
        "",
        "## Decision flips",
        "",
        "| Rate | This bundle |",
        "|---|---|",
        f"| Malignant after G+ (all patches) | {_with_ci(flips['malignant_after_pos'])} |",
        f"| Benign after G\u2212 (all patches) | {_with_ci(flips['benign_after_neg'])} |",
        f"| Flipped to malignant by G+ (of those benign on x) | {_with_ci(flips['flipped_to_malignant'])} |",
        f"| Flipped to benign by G\u2212 (of those malignant on x) | {_with_ci(flips['flipped_to_benign'])} |",
        "",
        "## Similarity to the input",
        "",
        f"SSIM: {settings['ssim']['implementation']}, data range {settings['ssim']['data_range']} "
        f"([-1, 1] images), k1 = {settings['ssim']['k1']}, k2 = {settings['ssim']['k2']} (the paper's c1, c2), "
        f"Gaussian window {settings['ssim']['window']} px, sigma {settings['ssim']['sigma']}. "
        "L1: mean absolute difference in normalised units.",
        "",
        "| Measure | This bundle |",
        "|---|---|",
    ]
    similarity = result["similarity"]
    for name, label in (("ssim_x_g_pos", "SSIM(x, G+(x))"), ("ssim_x_g_neg", "SSIM(x, G\u2212(x))"),
                        ("l1_x_g_pos", "L1(x, G+(x))"), ("l1_x_g_neg", "L1(x, G\u2212(x))")):
        lines.append(f"| {label} | {_with_ci(similarity[name])} |")
    changes = result["changes"]
    lines += [
        "",
        "## What the generators change: size or density",
        "",
        f"Definitions: {changes['definition']}.",
        "",
        "| Measure | x | G\u2212(x) | G+(x) |",
        "|---|---|---|---|",
        "| Soft-tissue area near the centre (mm²) | "
        + " | ".join(_with_ci(changes[f"soft_tissue_area_mm2_{name}"]) for name in ("x", "g_neg", "g_pos")) + " |",
        "| Mean HU inside the nodule's mask | "
        + " | ".join(_with_ci(changes[f"mean_hu_in_mask_{name}"]) for name in ("x", "g_neg", "g_pos")) + " |",
    ]
    lines += ["", "## Targets for the shipped bundle", "", "| Target | Value | Result |", "|---|---|---|"]
    for target in result["targets"]:
        verdict = "undefined: not met" if target["margin"] is None else (
            f"pass by {target['margin']:.3f}" if target["passed"] else f"miss by {-target['margin']:.3f}")
        comparison = "\u2265" if target["comparison"] == ">=" else "\u2264"
        lines.append(f"| {target['description']} {comparison} {target['target']} | "
                     f"{_number(target['value'])} | {verdict} |")
    lines += ["", f"![Examples: x, G\u2212(x), G+(x), R]({result['files']['figure']})", ""]
    return "\n".join(lines)
