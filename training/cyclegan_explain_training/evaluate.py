"""Evaluate a model bundle on a prepared dataset, as the paper's Sec. 4.1 and Table 1 do, and as
real nodule sub-volumes require (every figure under each surround fill and with the seed moved).

Writes ``evaluation.json`` (every number), ``evaluation.md`` (the tables, beside the paper's
figures, simple baselines and the issue's targets), ``explanations.png`` (real test nodules
after the paper's Fig. 6) and ``reliability.png`` (calibration). Inference goes through the
module's own path: the bundle loader (checksums verified), the bundle's HU window and
``run_networks``, so what is measured is what the module shows.

Every figure is a statistic of per-nodule values; all are bootstrapped together on the same
resamples of the split's nodules (metrics.bootstrap), so differences between conditions, between
the classifier and a baseline, or between bundles are paired.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from CycleGANExplainLib.inference import run_networks
from CycleGANExplainLib.intensity import denormalise_to_hu, normalise_hu
from CycleGANExplainLib.model_bundle import MODEL_FILES, ModelBundle, load_bundle, sha256_of

from .batched_inference import in_batches
from .calibration import TEMPERATURE_BOUNDS, expected_calibration_error, fit_temperature, reliability_bins, sigmoid
from .condition_draws import DRAWS, DrawPlan, draw_plan, redrawn_images, summarise_draws
from .dataset import BENIGN, CENTRE, MALIGNANT, MANIFEST_FILE, PreparedDataset, load_prepared
from .evaluation_conditions import VIEW_LABELS, Condition, evaluation_conditions
from .evaluation_report import render_markdown
from .explanation_checks import area_share, paste_within, share_of_magnitude, unrelated_partners
from .figures import choose_examples_by_label, explanation_figure, reliability_diagram
from .losses import SSIM_DATA_RANGE, SSIM_K1, SSIM_K2, SSIM_SIGMA, SSIM_WINDOW
from .metrics import (
    DECISION_THRESHOLD, MIN_STRATUM, NODULE_REGION_RADIUS_MM, SKIMAGE_SSIM_DATA_RANGE, SOFT_TISSUE_HU,
    bootstrap as bootstrap_estimates, classifier_metrics, flip_indicators, l1_per_image, mean_inside_masks,
    mean_of_map, nan_mean, paired_t_test, roc_auc, skimage_ssim_maps, soft_tissue_area_mm2, ssim_maps,
    ssim_per_image,
)
from .nodule_regions import within_mm_of_masks
from .reporting import json_safe, nest_paths, not_available
from .simple_baselines import (
    TWO_FEATURES, LogisticBaseline, diameter_tertile_edges, fit_logistic_baseline, nodule_features, tertile_of,
    visible_area,
)
from .size_matched import size_matched_figures

logger = logging.getLogger(__name__)

JSON_FILE = "evaluation.json"
MARKDOWN_FILE = "evaluation.md"
FIGURE_FILE = "explanations.png"
RELIABILITY_FILE = "reliability.png"
FIGURE_EXAMPLES_PER_CLASS = 4
CONFIDENCE = 0.95
MAIN = "main"  # the evaluated bundle's generators; extra bundles are "extra_1", ...
TERTILES = ("small", "middle", "large")

# Regions around the nodule's mask (nodule_regions), in mm.
SIMILARITY_REGION_MM = 15.0  # SSIM "near the nodule"
PASTE_REGION_MM = 5.0  # counterfactual pasting: G(x) within this distance of the mask, x elsewhere
RELEVANCE_REGIONS_MM = {"in_mask": 0.0, "within_5mm": 5.0, "within_10mm": 10.0}

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
# Why the reports set none of these beside this evaluation's figures (kept in the JSON for reference).
PAPER_NOT_COMPARABLE = (
    "The paper's figures (Katzmann et al. 2021, Table 1 and Sec. 4.1) are not set beside these: its test set (234 "
    "nodules of its own selection, labels, patches and classifier) is not this split, so the numbers are not "
    "comparable; evaluation.json keeps them under \"paper\".")


@dataclass(frozen=True)
class Target:
    """A goal from the issue for the shipped bundle.

    ``path`` locates the figure in the result, with ``{condition}`` for the condition's key. A
    target for every condition is judged on the worst one; the others on the primary condition
    (the centre view as the command line samples it), with every condition's value shown beside.
    """

    path: str
    comparison: str  # ">=" or "<="
    threshold: float
    description: str
    every_condition: bool = False

    @property
    def name(self) -> str:
        return self.path.replace("/{condition}", "").replace("/", ".")

    def margin(self, value: float) -> float:
        return value - self.threshold if self.comparison == ">=" else self.threshold - value

    def check(self, value: float) -> Dict[str, Any]:
        margin = self.margin(value)
        passed = bool(margin >= 0) if math.isfinite(margin) else False
        return {
            "name": self.name,
            "description": self.description,
            "comparison": self.comparison,
            "target": self.threshold,
            "value": value,
            "margin": margin,  # positive: met with room to spare; negative: missed by that much
            "passed": passed,
            "verdict": "MET" if passed else "MISSED",
        }


_GENERATORS = "generators/" + MAIN + "/{condition}/"
TARGETS = (
    Target("classifier/{condition}/auc", ">=", 0.90,
           "classifier AUC under every fill and with the seed moved 2 mm", every_condition=True),
    Target(_GENERATORS + "domain_transfer/g_pos", ">=", 0.85, "mean classifier output on G+(x)"),
    Target(_GENERATORS + "domain_transfer/g_neg", "<=", 0.15, "mean classifier output on G\u2212(x)"),
    Target(_GENERATORS + "flip_rates/flipped_to_malignant", ">=", 0.90, "benign decisions turned malignant by G+"),
    Target(_GENERATORS + "flip_rates/flipped_to_benign", ">=", 0.90, "malignant decisions turned benign by G\u2212"),
    Target(_GENERATORS + "similarity/skimage_ssim_x_g_pos", ">=", 0.80,
           "SSIM(x, G+(x)), scikit-image (default window, data range 2)"),
    Target(_GENERATORS + "similarity/skimage_ssim_x_g_neg", ">=", 0.80,
           "SSIM(x, G\u2212(x)), scikit-image (default window, data range 2)"),
    Target(_GENERATORS + "similarity/ssim_x_g_pos", ">=", 0.85, "SSIM(x, G+(x)), the project's SSIM"),
    Target(_GENERATORS + "similarity/ssim_x_g_neg", ">=", 0.85, "SSIM(x, G\u2212(x)), the project's SSIM"),
    Target(_GENERATORS + "relevance_shares/within_5mm", ">=", 0.50, "share of |R| within 5 mm of the nodule's mask"),
    # Issue 21, item 3: a classifier that is more than size (size_matched.py).
    Target("size_matched/test/{condition}/concordance/classifier", ">=", 0.75,
           "classifier: share of diameter-matched pairs (within 1 mm) ranked correctly"),
    Target("size_matched/test/{condition}/classifier_minus/auc/diameter", ">=", 0.0,
           "classifier AUC minus diameter alone's (not below it)"),
)


@dataclass
class References:
    """What is fitted on the train split before the test split is looked at."""

    two_feature: LogisticBaseline
    diameter: LogisticBaseline
    tertile_edges_mm: np.ndarray
    temperature: Dict[str, Any]
    validation: "ValidationScores"


@dataclass
class ValidationScores:
    """The classifier's validation patients (part of the train split) and its logit margins on
    their centre views under each fill; ``data`` is None (and ``described`` says why) when they
    cannot be recomputed."""

    data: Optional[PreparedDataset]
    margins: Dict[Optional[str], np.ndarray]
    described: str
    notes: List[str]


@dataclass
class PerNodule:
    """Per-nodule values (aligned with the primary condition's nodules) that the figures summarise.

    means: figure = NaN-ignoring mean (a NaN marks a nodule outside the figure's denominator);
    aucs: figure = AUC of the score over all nodules; tertile_aucs: the same within each diameter
    tertile ("{tertile}" in the key); probabilities: Table 1 and ECE per condition;
    differences: figure = one figure minus another, in the same resample.
    """

    labels: np.ndarray
    tertiles: np.ndarray
    means: Dict[str, np.ndarray] = field(default_factory=dict)
    aucs: Dict[str, np.ndarray] = field(default_factory=dict)
    tertile_aucs: Dict[str, np.ndarray] = field(default_factory=dict)
    probabilities: Dict[str, np.ndarray] = field(default_factory=dict)
    calibrated: Dict[str, np.ndarray] = field(default_factory=dict)
    differences: Dict[str, Tuple[str, str]] = field(default_factory=dict)
    _stacked: Optional[Tuple[np.ndarray, ...]] = field(default=None, repr=False)

    def _matrices(self) -> Tuple[np.ndarray, ...]:
        """[N, K] stacks of means, aucs and tertile_aucs (in their keys' order), built once: the
        values are complete when bootstrapping starts."""
        if self._stacked is None:
            self._stacked = tuple(
                np.stack([np.asarray(v, dtype=np.float64) for v in values.values()], axis=1) if values
                else np.empty((len(self.labels), 0))
                for values in (self.means, self.aucs, self.tertile_aucs))
        return self._stacked

    def statistics(self, indices: np.ndarray) -> Dict[str, float]:
        """Every figure on the nodules at ``indices`` (with repeats), for metrics.bootstrap."""
        labels = self.labels[indices]
        values: Dict[str, float] = {}
        for key, probabilities in self.probabilities.items():
            for name, value in classifier_metrics(labels, probabilities[indices]).items():
                values[f"classifier/{key}/{name}"] = value
            values[f"calibration/{key}/ece_before"] = expected_calibration_error(labels, probabilities[indices])
        for key, probabilities in self.calibrated.items():
            values[f"calibration/{key}/ece_after"] = expected_calibration_error(labels, probabilities[indices])
            values[f"calibration/{key}/ece_change"] = (values[f"calibration/{key}/ece_after"]
                                                       - values[f"calibration/{key}/ece_before"])
        means, aucs, tertile_aucs = self._matrices()
        if self.means:
            values.update(zip(self.means, nan_mean(means[indices], axis=0).tolist()))
        if self.aucs:
            values.update(zip(self.aucs, np.atleast_1d(roc_auc(labels, aucs[indices])).tolist()))
        if self.tertile_aucs:
            tertiles, scores = self.tertiles[indices], tertile_aucs[indices]
            for number, tertile in enumerate(TERTILES):
                inside = tertiles == number
                aucs = np.atleast_1d(roc_auc(labels[inside], scores[inside]))
                values.update((name.format(tertile=tertile), auc) for name, auc in zip(self.tertile_aucs, aucs.tolist()))
        for name, (first, second) in self.differences.items():
            values[name] = values[first] - values[second]
        return values


def evaluate(
    bundle_dir: Union[str, Path],
    dataset_dir: Union[str, Path],
    out_dir: Union[str, Path],
    split: str = "test",
    bootstrap: int = 1000,
    seed: int = 0,
    device: str = "auto",
    batch_size: int = 64,
    extra_bundles: Sequence[Union[str, Path]] = (),
    allow_unknown_bundle: bool = True,
    voi_dir: Optional[Union[str, Path]] = None,
    draws: int = DRAWS,
) -> Dict[str, Any]:
    """Evaluate the bundle on one split; write the JSON, Markdown and figures; return the JSON's content.

    ``allow_unknown_bundle``: run bundles the package does not ship (training evaluates the ones its
    engineer exported, which no digest list knows yet); the command line passes its
    --allow-unknown-bundle, so nothing runs there unasked.

    ``extra_bundles`` hold the same classifier (the same weights) and generators
    from other training seeds: their generator figures are reported beside the bundle's.
    The conditions that hold chance (the seed's shift direction, the lung texture) are also
    redrawn ``draws`` times and the classifier's figures summarised over the draws
    (condition_draws); ``voi_dir``, the nodule sub-volumes the dataset was cut from, lets the
    shifted views be re-cut (without it only the texture is redrawn).

    Raises BundleIntegrityError (naming the file) for a tampered bundle, ValueError for an extra
    bundle with another classifier, a dataset whose patches do not match its manifest, an
    empty split, fewer than 2 draws or a ``voi_dir`` that is not the dataset's. Undefined values
    are null in the JSON (NaN in the computation); see metrics.py.
    """
    if voi_dir is not None and not Path(voi_dir).is_dir():
        raise FileNotFoundError(f"The nodule sub-volume folder {voi_dir} does not exist.")
    bundle = load_bundle(bundle_dir, device, allow_unknown=allow_unknown_bundle)
    generator_bundles = {MAIN: bundle}
    for number, path in enumerate(extra_bundles, start=1):
        generator_bundles[f"extra_{number}"] = _load_extra_bundle(path, bundle, device, allow_unknown_bundle)
    dataset_dir = Path(dataset_dir)
    dataset = load_prepared(dataset_dir)
    dataset.require_patch_contract(bundle.metadata.patch_size_px, bundle.metadata.patch_extent_mm,
                                   f"bundle {Path(bundle_dir).name}")
    data = dataset.subset(split)
    if len(data) == 0:
        raise ValueError(f"The {split!r} split of {dataset_dir} is empty.")
    conditions, left_out = evaluation_conditions(data, seed)
    plan = draw_plan(draws, len(conditions[0].data), seed)  # refuses too few draws before any work
    references = _fit_references(bundle, dataset, conditions, batch_size)
    per_nodule, t_tests, primary_outputs = _measure_conditions(conditions, generator_bundles, references, seed,
                                                               batch_size)

    logger.info("Bootstrapping %d resamples.", bootstrap)
    estimates = bootstrap_estimates(per_nodule.statistics, len(per_nodule.labels), bootstrap, seed, CONFIDENCE)
    result = _assemble(estimates, bundle, generator_bundles, dataset, data, dataset_dir, split, bootstrap, seed,
                       conditions, left_out, references, per_nodule, t_tests,
                       _size_matched(bundle, conditions, references.validation, per_nodule, bootstrap, seed))
    logger.info("Redrawing the random conditions %d times.", draws)
    result["condition_draws"] = _condition_draws(bundle, conditions, per_nodule, plan, voi_dir, seed, batch_size)
    result["examples"] = _examples(conditions[0], seed)
    return _write_outputs(result, Path(out_dir), bundle, conditions[0], primary_outputs, split)


def _measure_conditions(conditions: List[Condition], generator_bundles: Dict[str, ModelBundle],
                        references: References, seed: int,
                        batch_size: int) -> Tuple[PerNodule, Dict[str, Any], Dict[str, np.ndarray]]:
    """Every condition's per-nodule values and t-tests, and the main bundle's outputs (with x)
    under the primary condition, for the figure."""
    primary = conditions[0].data
    per_nodule = PerNodule(labels=primary.labels, tertiles=tertile_of(primary.diameters_mm, references.tertile_edges_mm))
    t_tests: Dict[str, Any] = {}
    primary_outputs: Dict[str, np.ndarray] = {}
    for condition in conditions:
        logger.info("Condition %s: running the networks on %d patches (%s).", condition.label, len(condition.data),
                    generator_bundles[MAIN].device)
        outputs = _measure_condition(condition, generator_bundles, references, per_nodule, t_tests, seed, batch_size)
        if condition is conditions[0]:
            primary_outputs = outputs
    return per_nodule, t_tests, primary_outputs


def _size_matched(bundle: ModelBundle, conditions: List[Condition], validation: ValidationScores,
                  per_nodule: PerNodule, resamples: int, seed: int) -> Dict[str, Any]:
    """Diameter-matched pair concordance of the classifier beside size alone (size_matched.py):
    on the evaluated split under every condition, and on the classifier's validation patients
    (centre views, under each fill), where choices may be made."""
    pixel_mm2 = (bundle.metadata.patch_extent_mm / bundle.metadata.patch_size_px) ** 2

    def figures(data: PreparedDataset, p_x: np.ndarray) -> Dict[str, Any]:
        scores = {"classifier": p_x, "diameter": data.diameters_mm,
                  "mask_area": data.masks.reshape(len(data), -1).sum(axis=1) * pixel_mm2}
        return size_matched_figures(data.labels, data.diameters_mm, data.patient_ids, scores, resamples, seed,
                                    CONFIDENCE)

    result: Dict[str, Any] = {
        "test": {c.key: figures(c.data, per_nodule.probabilities[c.key]) for c in conditions},
        "validation": {},
        "validation_labels": {},
        "validation_patients": validation.described,
    }
    if validation.data is not None:
        for fill, margins in validation.margins.items():
            key = CENTRE if fill is None else f"{CENTRE}-{fill}"
            result["validation"][key] = figures(validation.data, sigmoid(margins))
            result["validation_labels"][key] = VIEW_LABELS[CENTRE] + ("" if fill is None else f", {fill} fill")
    return result


def _condition_draws(bundle: ModelBundle, conditions: List[Condition], per_nodule: PerNodule, plan: DrawPlan,
                     voi_dir: Optional[Union[str, Path]], seed: int, batch_size: int) -> Dict[str, Any]:
    """The classifier's AUC and accuracy over redrawn random conditions (condition_draws.py)."""
    window = bundle.metadata.hu_window
    fixed_auc = {c.key: roc_auc(per_nodule.labels, per_nodule.probabilities[c.key]) for c in conditions}
    drawn = redrawn_images(conditions, plan, voi_dir)
    return summarise_draws(drawn, per_nodule.labels,
                           lambda images: sigmoid(classifier_margins(bundle, normalise_hu(images, window), batch_size)),
                           fixed_auc, plan, seed)


def _examples(primary: Condition, seed: int) -> Dict[str, Any]:
    """The nodules the figure shows, chosen by label alone."""
    labels = primary.data.labels
    examples = choose_examples_by_label(labels, FIGURE_EXAMPLES_PER_CLASS, seed)
    return {"condition": primary.key, "indices": examples, "labels": [int(labels[i]) for i in examples],
            "rule": f"{FIGURE_EXAMPLES_PER_CLASS} benign then {FIGURE_EXAMPLES_PER_CLASS} malignant "
                    f"nodules in a random order seeded with {seed}; the model's outputs are not used"}


def _write_outputs(result: Dict[str, Any], out_dir: Path, bundle: ModelBundle, primary: Condition,
                   primary_outputs: Dict[str, np.ndarray], split: str) -> Dict[str, Any]:
    """Write the figures, the JSON and the Markdown; returns the result as the JSON holds it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    explanation_figure(
        out_dir / FIGURE_FILE, primary_outputs["x"], primary_outputs["g_neg"], primary_outputs["g_pos"],
        primary_outputs["p_x"], primary_outputs["p_neg"], primary_outputs["p_pos"], primary.data.labels,
        result["examples"]["indices"],
        title=f"{bundle.metadata.display_name}, {split} split, {primary.label}; "
              "p = classifier malignancy probability",
    )
    reliability_diagram(out_dir / RELIABILITY_FILE, [
        (condition["label"], result["calibration"][condition["key"]]["reliability_before"],
         result["calibration"][condition["key"]].get("reliability_after"))
        for condition in result["conditions"]])
    result = json_safe(result)
    (out_dir / JSON_FILE).write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    (out_dir / MARKDOWN_FILE).write_text(render_markdown(result))
    logger.info("Wrote %s, %s, %s and %s to %s.", JSON_FILE, MARKDOWN_FILE, FIGURE_FILE, RELIABILITY_FILE, out_dir)
    return result


def _load_extra_bundle(path: Union[str, Path], main: ModelBundle, device: str, allow_unknown: bool) -> ModelBundle:
    """An extra bundle's generators are comparable only if they explain the very same classifier.

    The classifier's weights and buffers are compared, not the file's bytes: TorchScript files
    of one network exported twice differ in their archive's internals.
    """
    extra = load_bundle(path, device, allow_unknown=allow_unknown)
    if not _same_weights(main.classifier, extra.classifier):
        raise ValueError(
            f"Extra bundle {path} has another classifier than {main.directory}: the weights of "
            f"{MODEL_FILES['classifier']} differ; its generators explain a different classifier and cannot be compared.")
    if tuple(extra.metadata.hu_window) != tuple(main.metadata.hu_window):
        raise ValueError(f"Extra bundle {path} uses another HU window than {main.directory}.")
    return extra


def _same_weights(first, second) -> bool:
    import torch

    one, other = first.state_dict(), second.state_dict()
    return one.keys() == other.keys() and all(torch.equal(one[key].cpu(), other[key].cpu()) for key in one)


def classifier_margins(bundle: ModelBundle, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """The bundle classifier's logit margin (malignant minus benign) per image [N, H, W];
    calibration.sigmoid of it is the malignancy probability (two-class softmax)."""
    if len(bundle.metadata.class_names) != 2:
        raise ValueError("The evaluation expects a two-class (benign, malignant) classifier.")
    malignant = bundle.metadata.malignant_index

    def margin(images):
        logits = bundle.classifier(images).float()
        return logits[:, malignant] - logits[:, 1 - malignant]

    return in_batches(margin, x, bundle.device, batch_size).numpy().astype(np.float64)


def _fit_references(bundle: ModelBundle, dataset: PreparedDataset, conditions: List[Condition],
                    batch_size: int) -> References:
    """Baselines and tertile edges from the train split's centre views; the temperature from the
    classifier's validation patients (part of the train split)."""
    train = dataset.subset("train", CENTRE)
    if len(train) == 0:
        raise ValueError("The baselines are fitted on the train split's centre views, and it has none.")
    two_feature = fit_logistic_baseline(nodule_features(train), train.labels, TWO_FEATURES)
    diameter = fit_logistic_baseline(train.diameters_mm[:, None], train.labels, ("diameter (mm)",))
    fills = sorted({condition.fill for condition in conditions}, key=str)
    validation = _validation_scores(bundle, dataset, fills, batch_size)
    return References(two_feature, diameter, diameter_tertile_edges(train), _temperature_from_validation(validation),
                      validation)


def _validation_scores(bundle: ModelBundle, dataset: PreparedDataset, fills: List[Optional[str]],
                       batch_size: int) -> ValidationScores:
    """The classifier's margins on its validation patients' centre views, under the same fills as
    the conditions, or why they cannot be had."""
    from .train_classifier import images_in_context, patient_validation_mask, validation_split_seed

    training = bundle.metadata.raw.get("training_data")
    classifier = training.get("classifier") if isinstance(training, dict) else None
    config = classifier.get("config") if isinstance(classifier, dict) else None
    if not isinstance(config, dict) or config.get("validation_fraction") is None or config.get("seed") is None:
        return ValidationScores(None, {}, "the bundle's metadata lacks training_data.classifier.config "
                                          "validation_fraction and seed, so the classifier's validation patients "
                                          "cannot be recomputed", [])
    train = dataset.subset("train")
    # Drawn over all the train split's views, exactly as train_classifier draws them (a patient's
    # majority label counts every view), so that these are the classifier's validation patients.
    held_out = patient_validation_mask(train.patient_ids, train.labels, float(config["validation_fraction"]),
                                       validation_split_seed(config))
    validation = train.select(held_out & (train.views == CENTRE))
    window = bundle.metadata.hu_window
    margins = {}
    for fill in fills:
        images = (normalise_hu(validation.images_hu, window) if fill is None
                  else images_in_context(validation, window, fill).numpy()[:, 0])
        margins[fill] = classifier_margins(bundle, images, batch_size)
    notes = []
    trained_on = ((training.get("dataset") or {}).get("patches_sha256") if isinstance(training, dict) else None)
    if trained_on != dataset.manifest.get("patches_sha256"):
        notes.append("the bundle was trained on another dataset than this one: these validation patients are the "
                     "ones the classifier's settings draw from this dataset's train split, not necessarily the ones "
                     "held out in its training (never test patients either way)")
    described = (f"the centre views of the classifier's validation patients (train split; validation_fraction "
                 f"{config['validation_fraction']}, seed {config['seed']})")
    return ValidationScores(validation, margins, described, notes)


def _temperature_from_validation(validation: ValidationScores) -> Dict[str, Any]:
    """Fit the temperature on the validation margins pooled over the fills (one temperature for
    every condition), or say why not."""
    if validation.data is None:
        return {"fitted": False, "reason": validation.described + "; temperature scaling skipped"}
    if len(np.unique(validation.data.labels)) < 2:
        return {"fitted": False, "reason": "the recomputed validation patients' centre views hold one class only; "
                                           "temperature scaling skipped"}
    fills = list(validation.margins)
    temperature = fit_temperature(np.concatenate([validation.data.labels] * len(fills)),
                                  np.concatenate([validation.margins[fill] for fill in fills]))
    notes = list(validation.notes)
    if not TEMPERATURE_BOUNDS[0] * 1.01 < temperature < TEMPERATURE_BOUNDS[1] / 1.01:
        notes.insert(0, f"T reached the end of its search range {list(TEMPERATURE_BOUNDS)}: the validation "
                        "likelihood keeps improving beyond it (few or separable validation nodules)")
    return {
        "fitted": True,
        "temperature": temperature,
        "fitted_on": validation.described + ", pooled over the fills " + ", ".join(str(fill) for fill in fills),
        "validation_patients": int(len(np.unique(validation.data.patient_ids))),
        "validation_nodules": int(len(validation.data)),
        "note": "; ".join(notes) or None,
    }


def _measure_condition(condition: Condition, generator_bundles: Dict[str, ModelBundle], references: References,
                       per_nodule: PerNodule, t_tests: Dict[str, Any], seed: int,
                       batch_size: int) -> Dict[str, np.ndarray]:
    """Run the networks under one condition and record its per-nodule values; returns the main
    bundle's outputs (with x) for the figure."""
    bundle = generator_bundles[MAIN]
    key, data = condition.key, condition.data
    labels = data.labels
    x = normalise_hu(condition.images_hu, bundle.metadata.hu_window)
    outputs = run_networks(bundle, x, batch_size)
    p_x = outputs["p_x"]
    per_nodule.probabilities[key] = p_x
    temperature = references.temperature
    if temperature["fitted"]:
        per_nodule.calibrated[key] = sigmoid(classifier_margins(bundle, x, batch_size) / temperature["temperature"])

    # Table 1's baselines: the diameter, the two-feature model and the visible area, each
    # measured on this condition's view.
    diameter_p = references.diameter.malignancy(data.diameters_mm[:, None])
    two_feature_p = references.two_feature.malignancy(nodule_features(data))
    per_nodule.aucs[f"baselines/{key}/diameter_auc"] = data.diameters_mm.astype(np.float64)
    per_nodule.aucs[f"baselines/{key}/two_feature_auc"] = two_feature_p
    per_nodule.aucs[f"baselines/{key}/visible_area_auc"] = visible_area(data)
    malignant = labels == MALIGNANT
    per_nodule.means[f"baselines/{key}/diameter_accuracy"] = ((diameter_p >= DECISION_THRESHOLD) == malignant) * 1.0
    per_nodule.means[f"baselines/{key}/two_feature_accuracy"] = ((two_feature_p >= DECISION_THRESHOLD) == malignant) * 1.0
    for name, (first, second) in {
        "classifier_minus_diameter_auc": (f"classifier/{key}/auc", f"baselines/{key}/diameter_auc"),
        "classifier_minus_two_feature_auc": (f"classifier/{key}/auc", f"baselines/{key}/two_feature_auc"),
        "visible_area_minus_diameter_auc": (f"baselines/{key}/visible_area_auc", f"baselines/{key}/diameter_auc"),
    }.items():
        per_nodule.differences[f"baselines/{key}/{name}"] = (first, second)

    # By diameter tertile (edges from the train split).
    correct = ((p_x >= DECISION_THRESHOLD) == malignant) * 1.0
    diameter_correct = ((diameter_p >= DECISION_THRESHOLD) == malignant) * 1.0
    for number, tertile in enumerate(TERTILES):
        inside = per_nodule.tertiles == number
        per_nodule.means[f"tertiles/{key}/{tertile}/classifier_accuracy"] = np.where(inside, correct, np.nan)
        per_nodule.means[f"tertiles/{key}/{tertile}/diameter_accuracy"] = np.where(inside, diameter_correct, np.nan)
    per_nodule.tertile_aucs[f"tertiles/{key}/{{tertile}}/classifier_auc"] = p_x
    per_nodule.tertile_aucs[f"tertiles/{key}/{{tertile}}/diameter_auc"] = data.diameters_mm.astype(np.float64)

    # Regions around this view's nodule mask, and the levels that mean "no better than chance".
    regions = {name: within_mm_of_masks(data.masks, mm) for name, mm in RELEVANCE_REGIONS_MM.items()}
    near = within_mm_of_masks(data.masks, SIMILARITY_REGION_MM)
    paste_region = within_mm_of_masks(data.masks, PASTE_REGION_MM)
    for name, region in regions.items():
        per_nodule.means[f"chance_levels/{key}/relevance_shares/{name}"] = area_share(region)
    partners = unrelated_partners(len(x), seed)
    for name, value in _similarities(x, x[partners], near).items():
        per_nodule.means[f"chance_levels/{key}/similarity/{name}_unrelated"] = value

    for label, generator_bundle in generator_bundles.items():
        generated = outputs if label == MAIN else run_networks(generator_bundle, x, batch_size)
        _record_generators(f"generators/{label}/{key}", bundle, x, p_x, generated, data, regions, near, paste_region,
                           per_nodule, t_tests, batch_size)
    return {"x": x, **outputs}


def _similarities(x: np.ndarray, other: np.ndarray, near: np.ndarray) -> Dict[str, np.ndarray]:
    """Per image pair: both SSIMs over the whole patch and within SIMILARITY_REGION_MM of the nodule."""
    project_maps, project_border = ssim_maps(x, other)
    skimage_maps, skimage_border = skimage_ssim_maps(x, other)
    return {
        "ssim": ssim_per_image(x, other),
        "ssim_15mm": mean_of_map(project_maps, project_border, near),
        "skimage_ssim": mean_of_map(skimage_maps, skimage_border),
        "skimage_ssim_15mm": mean_of_map(skimage_maps, skimage_border, near),
    }


def _record_generators(prefix: str, bundle: ModelBundle, x: np.ndarray, p_x: np.ndarray,
                       outputs: Dict[str, np.ndarray], data: PreparedDataset, regions: Dict[str, np.ndarray],
                       near: np.ndarray, paste_region: np.ndarray, per_nodule: PerNodule, t_tests: Dict[str, Any],
                       batch_size: int) -> None:
    """One generator pair's figures 5-8 under one condition (the classifier is the bundle's)."""
    g_pos, g_neg = outputs["g_pos"], outputs["g_neg"]
    means = per_nodule.means
    for name, probabilities in (("x", p_x), ("g_neg", outputs["p_neg"]), ("g_pos", outputs["p_pos"])):
        means[f"{prefix}/domain_transfer/{name}"] = probabilities.astype(np.float64)
    t_tests[prefix] = {"g_pos_vs_x": paired_t_test(outputs["p_pos"], p_x),
                       "x_vs_g_neg": paired_t_test(p_x, outputs["p_neg"])}
    for name, events in flip_indicators(p_x, outputs["p_pos"], outputs["p_neg"]).items():
        means[f"{prefix}/flip_rates/{name}"] = events
    for image_name, generated in (("g_pos", g_pos), ("g_neg", g_neg)):
        for name, value in _similarities(x, generated, near).items():
            means[f"{prefix}/similarity/{name}_x_{image_name}"] = value
        means[f"{prefix}/similarity/l1_x_{image_name}"] = l1_per_image(x, generated)
    relevance = g_pos - g_neg
    for name, region in regions.items():
        means[f"{prefix}/relevance_shares/{name}"] = share_of_magnitude(relevance, region)
    # Counterfactual sufficiency: G(x) pasted only near the nodule, or only away from it.
    for placement, region in (("inside_5mm", paste_region), ("outside_5mm", ~paste_region)):
        p_pos = sigmoid(classifier_margins(bundle, paste_within(x, g_pos, region), batch_size))
        p_neg = sigmoid(classifier_margins(bundle, paste_within(x, g_neg, region), batch_size))
        events = flip_indicators(p_x, p_pos, p_neg)
        for name in ("flipped_to_malignant", "flipped_to_benign"):
            means[f"{prefix}/counterfactual/{placement}/{name}"] = events[name]
    # Size or density? What each image shows near the nodule (see metrics.soft_tissue_area_mm2).
    window = bundle.metadata.hu_window
    pixel_mm = bundle.metadata.patch_extent_mm / bundle.metadata.patch_size_px
    images_hu = {"x": denormalise_to_hu(x, window), "g_neg": denormalise_to_hu(g_neg, window),
                 "g_pos": denormalise_to_hu(g_pos, window)}
    for name, image in images_hu.items():
        means[f"{prefix}/changes/soft_tissue_area_mm2_{name}"] = soft_tissue_area_mm2(image, pixel_mm)
        means[f"{prefix}/changes/mean_hu_in_mask_{name}"] = mean_inside_masks(image, data.masks)


def _lookup(nested: Dict[str, Any], path: str) -> Any:
    node = nested
    for part in path.split("/"):
        node = node[part]
    return node


def check_targets(figures: Dict[str, Any], conditions: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Each target MET or MISSED: on the worst condition when it holds for every condition, else
    on the primary (first) one; every condition's value is listed beside."""
    checked = []
    for target in TARGETS:
        values = {c["key"]: _lookup(figures, target.path.format(condition=c["key"]))["value"] for c in conditions}
        values = {key: math.nan if value is None else value for key, value in values.items()}  # n/a: undefined
        margins = {key: target.margin(value) for key, value in values.items()}
        if target.every_condition:  # the worst; an undefined value counts as the worst
            judged = min(margins, key=lambda key: margins[key] if math.isfinite(margins[key]) else -math.inf)
        else:
            judged = conditions[0]["key"]
        entry = target.check(values[judged])
        entry.update(judged_on=judged, every_condition=target.every_condition, by_condition=values,
                     met_under_every_condition=all(math.isfinite(m) and m >= 0 for m in margins.values()))
        checked.append(entry)
    return checked


def _calibration_verdict(change: Dict[str, Any]) -> str:
    low, high = change["ci_low"], change["ci_high"]
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return "undefined"
    if high < 0:
        return "helps (ECE lower after scaling; the 95 % CI of the change excludes 0)"
    if low > 0:
        return "hurts (ECE higher after scaling; the 95 % CI of the change excludes 0)"
    return "no clear difference (the 95 % CI of the change includes 0)"


def _assemble(estimates: Dict[str, Any], bundle: ModelBundle, generator_bundles: Dict[str, ModelBundle],
              dataset: PreparedDataset, data: PreparedDataset, dataset_dir: Path, split: str, resamples: int, seed: int,
              conditions: List[Condition], left_out: List[str], references: References, per_nodule: PerNodule,
              t_tests: Dict[str, Any], size_matched: Dict[str, Any]) -> Dict[str, Any]:
    """Nest the bootstrap estimates by section (n/a on strata too small) and add the t-tests, the
    paper's values, the fitted references, the reliability bins, the size-matched figures and the
    targets."""
    figures = nest_paths({key: _too_small(key, per_nodule) or estimate.as_dict()
                          for key, estimate in estimates.items()})
    for prefix, tests in t_tests.items():
        for name, test in tests.items():
            test["paper"] = PAPER_T_TESTS[name]
        _lookup(figures, prefix)["t_tests"] = tests
    described = [condition.describe() for condition in conditions]
    calibration = _calibration_figures(figures, conditions, per_nodule)
    primary = conditions[0].data
    metadata = bundle.metadata
    return {
        "bundle": {"name": metadata.name, "version": metadata.version, "trained": metadata.trained,
                   "directory": str(bundle.directory), "hu_window": list(metadata.hu_window)},
        "generator_bundles": {label: _describe_generators(generator_bundle)
                              for label, generator_bundle in generator_bundles.items()},
        "dataset": {
            "directory": str(dataset_dir),
            "source": dataset.manifest.get("source"),
            "manifest_sha256": sha256_of(dataset_dir / MANIFEST_FILE),
            "patches_sha256": data.manifest.get("patches_sha256"),
            "split": split,
            "n": int(len(primary)),
            "benign": int(np.sum(primary.labels == BENIGN)),
            "malignant": int(np.sum(primary.labels == MALIGNANT)),
            "label": dataset.manifest.get("label"),
            "unit": "one nodule (its centre view, or its seed-shifted view under the seed-moved conditions)",
        },
        "conditions": described,
        "conditions_left_out": left_out,
        "settings": _settings(seed, resamples, bundle.device),
        "paper": {
            "classifier": {name: {"value": v, "ci_low": lo, "ci_high": hi} for name, (v, lo, hi) in PAPER_TABLE1.items()},
            "mean_malignancy": {name: {"value": v, "ci_low": lo, "ci_high": hi}
                                for name, (v, lo, hi) in PAPER_MEAN_MALIGNANCY.items()},
        },
        "reference_models": _reference_models(references, per_nodule),
        "classifier": figures["classifier"],
        "baselines": figures["baselines"],
        "tertiles": figures["tertiles"],
        "calibration": calibration,
        "generators": figures["generators"],
        "chance_levels": figures["chance_levels"],
        "changes_definition": (
            f"soft-tissue area: pixels >= {SOFT_TISSUE_HU:g} HU within {NODULE_REGION_RADIUS_MM:g} mm of the patch "
            "centre; mean HU in mask: inside the nodule's mask, in the HU window"),
        "size_matched": size_matched,
        "targets": check_targets({**figures, "size_matched": size_matched}, described),
        "files": {"json": JSON_FILE, "markdown": MARKDOWN_FILE, "figure": FIGURE_FILE,
                  "reliability": RELIABILITY_FILE},
    }


def _too_small(key: str, per_nodule: PerNodule) -> Optional[Dict[str, Any]]:
    """The n/a entry for a figure resting on fewer than MIN_STRATUM nodules: a mean over fewer
    defined values, or any figure of a diameter tertile with fewer nodules of either label; None
    for a figure that stands."""
    if key in per_nodule.means and int(np.sum(np.isfinite(per_nodule.means[key]))) < MIN_STRATUM:
        return not_available(f"n/a: fewer than {MIN_STRATUM} nodules in the denominator")
    if key.startswith("tertiles/"):
        inside = per_nodule.tertiles == TERTILES.index(key.split("/")[2])
        suspicious = int(np.sum(per_nodule.labels[inside] == MALIGNANT))
        if min(suspicious, int(inside.sum()) - suspicious) < MIN_STRATUM:
            return not_available(f"n/a: {suspicious} of {int(inside.sum())} nodules in the stratum rated suspicious "
                                 f"by readers (fewer than {MIN_STRATUM} of a label)")
    return None


def _calibration_figures(figures: Dict[str, Any], conditions: List[Condition],
                         per_nodule: PerNodule) -> Dict[str, Any]:
    """The figures' calibration section with each condition's reliability bins and verdict added."""
    calibration = figures.setdefault("calibration", {})
    for condition in conditions:
        key = condition.key
        entry = calibration.setdefault(key, {})
        entry["reliability_before"] = reliability_bins(per_nodule.labels, per_nodule.probabilities[key])
        if key in per_nodule.calibrated:
            entry["reliability_after"] = reliability_bins(per_nodule.labels, per_nodule.calibrated[key])
            entry["verdict"] = _calibration_verdict(entry["ece_change"])
    return calibration


def _settings(seed: int, resamples: int, device: str) -> Dict[str, Any]:
    """How the figures were computed: statistics, SSIMs, regions."""
    return {
        "seed": seed,
        "bootstrap_resamples": resamples,
        "confidence": CONFIDENCE,
        "ci_method": "percentile bootstrap over nodules, every figure on the same resamples (differences are "
                     "paired); resamples where a statistic is undefined are left out and counted in "
                     "undefined_resamples",
        "decision_threshold": DECISION_THRESHOLD,
        "positive_class": "malignant: for a label, rated suspicious by readers (not a pathology result); for the "
                          "classifier, malignancy probability >= the decision threshold",
        "min_stratum": MIN_STRATUM,
        "device": device,
        "ssim": {"implementation": "losses.structural_similarity (MONAI SSIMLoss on images mapped from [-1, 1] "
                                   "to [0, 1])", "data_range": SSIM_DATA_RANGE, "k1": SSIM_K1,
                 "k2": SSIM_K2, "window": SSIM_WINDOW, "sigma": SSIM_SIGMA, "kernel": "gaussian"},
        "skimage_ssim": {"implementation": "skimage.metrics.structural_similarity, default window (7 x 7 uniform, "
                                           "sample covariance)", "data_range": SKIMAGE_SSIM_DATA_RANGE,
                         "images": "[-1, 1]"},
        "regions_mm": {"similarity_near_nodule": SIMILARITY_REGION_MM, "counterfactual_paste": PASTE_REGION_MM,
                       "relevance_shares": RELEVANCE_REGIONS_MM,
                       "definition": "Euclidean distance to the nodule's mask in the patch "
                                     "(nodule_regions.within_mm_of_masks)"},
        "similarity_floor": "SSIM between each test patch and another, unrelated one (seeded random pairing "
                            "without self-pairs), under the same condition",
        "paper_auc_note": PAPER_AUC_NOTE,
        "paper_comparison": PAPER_NOT_COMPARABLE,
    }


def _reference_models(references: References, per_nodule: PerNodule) -> Dict[str, Any]:
    """What was fitted on the train split, and how many test nodules (malignant ones) each tertile holds."""
    counts = {tertile: {"n": int(np.sum(per_nodule.tertiles == number)),
                        "malignant": int(np.sum((per_nodule.tertiles == number) & (per_nodule.labels == MALIGNANT)))}
              for number, tertile in enumerate(TERTILES)}
    return {
        "two_feature": references.two_feature.describe(),
        "diameter": references.diameter.describe(),
        "diameter_tertile_edges_mm": references.tertile_edges_mm.tolist(),
        "tertile_counts": counts,
        "temperature": references.temperature,
    }


def _describe_generators(bundle: ModelBundle) -> Dict[str, Any]:
    training = bundle.metadata.raw.get("training_data")
    cyclegan = training.get("cyclegan") if isinstance(training, dict) else None
    return {"name": bundle.metadata.name, "version": bundle.metadata.version, "directory": str(bundle.directory),
            "cyclegan_seed": cyclegan.get("seed") if isinstance(cyclegan, dict) else None,
            "generator_pos_sha256": sha256_of(Path(bundle.directory) / MODEL_FILES["generator_pos"])}
