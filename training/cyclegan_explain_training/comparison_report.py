"""The method comparison's report: baselines.json, baselines.md and baselines.png.

Means come with percentile bootstrap 95 % CIs (metrics.bootstrap: every method and measure of a
group on the same resamples, so they stay paired), overall and per predicted class; every other row
is compared with CycleGAN-AM patch by patch (two-sided Wilcoxon signed-rank test, scipy). Rows run
CycleGAN-AM first, the baselines, then the model-free controls. The figure follows the paper's Fig. 6:
the original patch, then CycleGAN-AM and the baselines, benign and malignant rows, drawn with the
module's own colour table and blending (CycleGANExplainLib.overlay), each map on its own symmetric range.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch as LegendPatch

from CycleGANExplainLib.attribution_methods import CYCLEGAN_AM, method_info
from CycleGANExplainLib.overlay import BENIGN_RGB, MALIGNANT_RGB, blend_over_grey, relevance_to_rgba, symmetric_limit

from .attribution_metrics import DEFINITIONS, GROUPS, MASK_DILATIONS_MM, SCORE_CONVENTION
from .dataset import MALIGNANT
from .figures import choose_examples
from .metrics import bootstrap, nan_mean
from .reporting import UNTRAINED_BANNER, estimate_text, json_safe, markdown_table, number_text

JSON_FILE = "baselines.json"
MARKDOWN_FILE = "baselines.md"
FIGURE_FILE = "baselines.png"
CONFIDENCE = 0.95
FIGURE_METHODS = ("cyclegan-am", "deeplift-shap", "grad-cam", "integrated-gradients", "lrp")  # the paper's Fig. 6
FIGURE_EXAMPLES_PER_CLASS = 2
PANEL_INCHES = 2.0
# Lenis et al. 2020 (counterfactual impact analysis): on a Titan RTX GPU, mammograms of 576 x 448 px.
SPEED_ANCHOR = {"their single-pass attribution network": 75.0, "Grad-CAM": 50.0, "saliency": 31.0}

GROUP_LABELS = {"all": "all", "predicted_malignant": "pred. malignant", "predicted_benign": "pred. benign"}
REFERENCE_LABELS = {"air": "air", "lung": "lung", "blurred": "blurred x"}
LOCALISATION_COLUMNS = tuple(
    (f"{name}_{distance:g}mm", f"{label} {distance:g} mm")
    for name, label in (("relevance_mass", "Mass"), ("pointing_game", "Pointing"), ("relevance_rank", "Rank"))
    for distance in MASK_DILATIONS_MM) + (("surround_share", "Share on fill"),)
CONCENTRATION_COLUMNS = (("sparseness_gini", "Sparseness (Gini) \u2191"),
                         ("complexity_entropy", "Complexity (entropy, nats) \u2193"))
RANDOMISATION_KEY = "randomisation_spearman"


def paired_wilcoxon(other: np.ndarray, ours: np.ndarray) -> Dict[str, Any]:
    """Two-sided Wilcoxon signed-rank test of other - ours over patches where both are defined."""
    from scipy.stats import wilcoxon

    other, ours = np.asarray(other, dtype=np.float64), np.asarray(ours, dtype=np.float64)
    both = np.isfinite(other) & np.isfinite(ours)
    difference = other[both] - ours[both]
    result = {"n": int(both.sum()), "median_difference": float(np.median(difference)) if both.any() else math.nan,
              "statistic": math.nan, "p": math.nan}
    if np.any(difference != 0):  # all-equal pairs: no test (scipy would refuse or return NaN)
        test = wilcoxon(other[both], ours[both])
        result.update(statistic=float(test.statistic), p=float(test.pvalue))
    return result


def summarise(per_patch: Dict[str, Dict[str, np.ndarray]], resamples: int, seed: int) -> Dict[str, Any]:
    """{measure: {method: Estimate dict with n}}, every method and measure on the same resamples.

    A resample's mean is over the patches where the measure is defined; no patches at all gives NaN.
    """
    columns = [(measure, method) for method, values in per_patch.items() for measure in values]
    matrix = np.column_stack([np.asarray(per_patch[method][measure], dtype=np.float64)
                              for measure, method in columns])
    summary: Dict[str, Any] = {}
    for measure, method in columns:
        summary.setdefault(measure, {})[method] = {
            "value": math.nan, "ci_low": math.nan, "ci_high": math.nan, "undefined_resamples": resamples,
            "n": int(np.isfinite(per_patch[method][measure]).sum())}
    if len(matrix) == 0:
        return summary

    def statistics(indices: np.ndarray) -> Dict[str, float]:
        return {str(column): float(mean) for column, mean in enumerate(nan_mean(matrix[indices], axis=0))}

    for column, estimate in bootstrap(statistics, len(matrix), resamples, seed, CONFIDENCE).items():
        measure, method = columns[int(column)]
        summary[measure][method].update(estimate.as_dict())
    return summary


def _select(per_patch: Dict[str, Dict[str, np.ndarray]], keep: np.ndarray) -> Dict[str, Dict[str, np.ndarray]]:
    return {method: {measure: np.asarray(values)[keep] for measure, values in measures.items()}
            for method, measures in per_patch.items()}


def build_report(comparison: Dict[str, Any], resamples: int, seed: int, command: Optional[str]) -> Dict[str, Any]:
    """The JSON document: settings, definitions, per-measure estimates and tests per group, randomisation, speed."""
    methods: List[str] = comparison["methods"]
    per_patch = comparison["per_patch"]
    groups = comparison["groups"]
    measures: Dict[str, Dict[str, Any]] = {measure: {} for measure in per_patch[CYCLEGAN_AM]}
    for group in GROUPS:
        subset = _select(per_patch, groups[group])
        summary = summarise(subset, resamples, seed)
        for measure in measures:
            measures[measure][group] = {
                "estimates": summary[measure],
                "wilcoxon_vs_cyclegan_am": {key: paired_wilcoxon(subset[key][measure], subset[CYCLEGAN_AM][measure])
                                            for key in methods if key != CYCLEGAN_AM}}
    randomisation = comparison["randomisation"]
    values = randomisation["values"]
    randomisation_estimates = (summarise({key: {RANDOMISATION_KEY: v} for key, v in values.items()}, resamples,
                                         seed)[RANDOMISATION_KEY] if values else {})
    not_run = {key: (randomisation["controls"] if comparison["descriptions"][key]["control"] else
                     "not run: CycleGAN-AM's R comes from generators trained against the classifier, so a randomised "
                     "classifier needs generators trained against it (pass --sanity-bundle)")
               for key in methods if key not in values}
    group_sizes = {group: int(np.sum(mask)) for group, mask in groups.items()}
    return {
        "bundle": comparison["bundle"],
        "dataset": {**comparison["dataset"], "group_sizes": group_sizes},
        "methods": comparison["descriptions"],
        "settings": {
            "seed": seed, "bootstrap_resamples": resamples, "confidence": CONFIDENCE,
            "ci_method": "percentile bootstrap over patches, all methods and measures of a group on the same "
                         "resamples; a resample's mean is over the patches where the measure is defined",
            "paired_test": "two-sided Wilcoxon signed-rank (scipy.stats.wilcoxon, zero differences dropped) of "
                           "row - CycleGAN-AM over the patches where both are defined",
            "magnitude": "every measure ranks or sums |map|: signed maps carry evidence in both directions",
            "groups": "predicted class on the unperturbed patch, p(malignant) >= 0.5 = predicted malignant",
            "mask_dilations_mm": list(MASK_DILATIONS_MM),
            "perturbation": comparison["perturbation"],
            "score_convention": SCORE_CONVENTION,
        },
        "definitions": DEFINITIONS,
        "measures": measures,
        "randomisation": {**{key: value for key, value in randomisation.items() if key != "values"},
                          "estimates": randomisation_estimates, "not_run": not_run,
                          "per_patch": {key: v.tolist() for key, v in values.items()},
                          "cyclegan_am_flip_test": comparison["cyclegan_sanity"]},
        "speed": {**comparison["speed"], "anchor_maps_per_second": SPEED_ANCHOR},
        "stage_seconds": comparison["stage_seconds"],
        "command": command,
        "per_patch": {key: {measure: np.asarray(v).tolist() for measure, v in per_method.items()}
                      for key, per_method in per_patch.items()},
        "predicted_malignant": np.asarray(groups["predicted_malignant"]).tolist(),
        "files": {"json": JSON_FILE, "markdown": MARKDOWN_FILE, "figure": FIGURE_FILE},
    }


def per_panel_scaled(relevance: np.ndarray) -> Tuple[np.ndarray, float]:
    """The map divided by its largest |value| (a zero map stays zero), and that value.

    The methods' units differ (CycleGAN-AM: intensity; the baselines: log-odds per pixel, often
    far below symmetric_limit's 0.05 floor), so each panel is drawn on its own symmetric range:
    symmetric_limit of the unit-peak map, i.e. the 99.5th percentile of |map| but at least 5 % of its peak.
    """
    peak = float(np.max(np.abs(relevance))) if np.size(relevance) else 0.0
    return (np.asarray(relevance, dtype=np.float64) / peak if peak > 0 else np.zeros_like(relevance)), peak


def comparison_figure(path: Union[str, Path], x: np.ndarray, maps: Dict[str, np.ndarray], labels: np.ndarray,
                      p_x: np.ndarray, indices: Sequence[int], title: str) -> Path:
    """The original patch and one map per method (FIGURE_METHODS that were run) for each example row."""
    columns = [key for key in FIGURE_METHODS if key in maps]
    indices = list(indices)
    if not indices:
        raise ValueError("No examples to draw.")
    figure = Figure(figsize=((1 + len(columns)) * PANEL_INCHES, len(indices) * PANEL_INCHES + 0.9), dpi=100)
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(len(indices), 1 + len(columns), top=0.9, bottom=0.1, left=0.02, right=0.98,
                               wspace=0.06, hspace=0.35)
    for row, index in enumerate(indices):
        grey = (x[index] + 1.0) / 2.0
        label = "malignant" if labels[index] == MALIGNANT else "benign"
        panels = [(grey, f"{label}, p(malignant) = {p_x[index]:.2f}")]
        for key in columns:
            unit_map, peak = per_panel_scaled(maps[key][index])
            limit = symmetric_limit(unit_map)
            panels.append((blend_over_grey(grey, relevance_to_rgba(unit_map, limit)),
                           f"{method_info(key).label}\n\u00b1{limit * peak:.2g}"))
        for column, (image, text) in enumerate(panels):
            axis = figure.add_subplot(grid[row, column])
            axis.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            axis.set_title(text, fontsize=7)
            axis.set_xticks([])
            axis.set_yticks([])
    figure.legend(handles=[LegendPatch(color=MALIGNANT_RGB, label="red: malignancy-indicating (unsigned maps: "
                                                                  "magnitude)"),
                           LegendPatch(color=BENIGN_RGB, label="blue: benign-indicating")],
                  loc="lower center", ncol=2, fontsize=8, frameon=False)
    figure.suptitle(title, fontsize=9)
    path = Path(path)
    figure.savefig(path, dpi=100)
    return path


def _estimate_cell(estimate: Optional[Dict[str, Any]], group_size: int) -> str:
    if estimate is None:
        return "not run"
    if estimate["n"] == 0:
        return "n/a"
    return estimate_text(estimate) + ("" if estimate["n"] == group_size else f" (n = {estimate['n']})")


def _test_cell(test: Optional[Dict[str, Any]]) -> str:
    if test is None:
        return "(reference)"
    if test["median_difference"] is None:
        return "n/a"
    p = "n/a" if test["p"] is None else f"{test['p']:.2g}"
    return f"{test['median_difference']:+.3f}, p {p}"


def _tables(report: Dict[str, Any], columns: Sequence[Tuple[str, str, str]], title: str) -> List[str]:
    """Two tables with one row per method: mean [95 % CI] per (measure, group) column, then the paired tests."""
    methods, sizes = report["methods"], report["dataset"]["group_sizes"]
    header = ["Method"] + [label for _, _, label in columns]
    estimate_rows, test_rows = [], []
    for key, info in methods.items():
        cells, test_cells = [info["label"]], [info["label"]]
        for measure, group, _ in columns:
            entry = report["measures"][measure][group]
            cells.append(_estimate_cell(entry["estimates"][key], sizes[group]))
            test_cells.append(_test_cell(entry["wilcoxon_vs_cyclegan_am"].get(key)))
        estimate_rows.append(cells)
        test_rows.append(test_cells)
    return ([f"### {title}: mean [95 % CI]", ""] + markdown_table(header, estimate_rows) + [""]
            + [f"### {title}: median difference vs CycleGAN-AM, Wilcoxon p", ""] + markdown_table(header, test_rows)
            + [""])


def render_markdown(report: Dict[str, Any]) -> str:
    """baselines.md: the setting, one section per group of measures, the figure and how to regenerate it."""
    lines = _setting_lines(report) + _localisation_lines(report)
    lines += _perturbation_lines(report) + _concentration_lines(report)
    lines += _randomisation_lines(report)
    lines += _speed_lines(report)
    lines += _figure_lines(report)
    return "\n".join(lines)


def _setting_lines(report: Dict[str, Any]) -> List[str]:
    bundle, dataset, settings = report["bundle"], report["dataset"], report["settings"]
    methods, sizes = report["methods"], dataset["group_sizes"]
    lines = [f"# Attribution methods compared: {bundle['name']} {bundle['version']}", ""]
    if not bundle["trained"]:
        lines += [UNTRAINED_BANNER, ""]
    return lines + [
        f"Split `{dataset['split']}`, {dataset['view']} views (one per nodule) of `{dataset['directory']}` "
        f"(source `{dataset['source']}`): n = {dataset['n']} of {dataset['split_size']} patches "
        f"({dataset['benign']} benign, {dataset['malignant']} malignant"
        + (f"; {dataset['limit']} drawn at random with seed {settings['seed']}" if dataset["limit"] else "")
        + f"); manifest SHA-256 `{dataset['manifest_sha256']}`. **Fill: `{dataset['fill']}`** (seed "
        f"{dataset['fill_seed']}): the pixels beyond the nodule's sub-volume (`valid` = 0; median valid fraction "
        f"{dataset['median_valid_fraction']:.2f}) hold context_fill's `{dataset['fill']}` surround. Every method "
        "explains the same classifier (the bundle's) on the same filled patches, normalised with the bundle's HU "
        f"window {bundle['hu_window']}. The classifier predicts {sizes['predicted_malignant']} malignant and "
        f"{sizes['predicted_benign']} benign (p(malignant) >= 0.5).",
        "",
        f"Statistics: {settings['ci_method']}; {settings['bootstrap_resamples']} resamples. Paired test: "
        f"{settings['paired_test']}. Magnitudes: {settings['magnitude']}. n/a = undefined; (n = k) = the measure is "
        "defined on k patches of the group only.",
        "",
        "Rows: " + "; ".join(f"**{info['label']}** ({info['library']}"
                              + ("" if info["signed"] else ", unsigned") + ")" for info in methods.values()) + ".",
        "",
        "Controls (no model; they test what the measures reward): "
        + "; ".join(f"{info['label']}: {info['description']}" for info in methods.values() if info["control"]) + ".",
        "",
    ]


def _localisation_lines(report: Dict[str, Any]) -> List[str]:
    dataset, settings, definitions = report["dataset"], report["settings"], report["definitions"]
    dilations = ", ".join(f"{d:g}" for d in settings["mask_dilations_mm"])
    areas = ", ".join(f"{d:g} mm {dataset['region_area_fraction'][f'{d:g}mm']:.3f}"
                      for d in settings["mask_dilations_mm"])
    lines = [
        "## Localisation",
        "",
        f"Region = pixels within d mm of the nodule mask (d = {dilations}) "
        "that hold real image. **Valid pixels**: the regions are restricted to `valid` pixels; the denominators, "
        "the peak and the ranking run over the whole patch, fill included (relevance on the fill is relevance not "
        "on the nodule; its share is the last column). Mean area of the region as a fraction of the patch (a "
        f"uniform map's mass): {areas}. Higher is better for mass, pointing and rank; the fill share is "
        "descriptive.",
        "",
        f"- Mass: {definitions['relevance_mass']}",
        f"- Pointing: {definitions['pointing_game']}",
        f"- Rank: {definitions['relevance_rank']}",
        f"- Share on fill: {definitions['surround_share']}",
        "",
    ]
    return lines + _tables(report, [(measure, "all", label) for measure, label in LOCALISATION_COLUMNS],
                           "Localisation")


def _perturbation_lines(report: Dict[str, Any]) -> List[str]:
    settings, definitions = report["settings"], report["definitions"]
    perturbation = settings["perturbation"]
    references = perturbation["references"]
    lines = [
        "## Deletion and insertion",
        "",
        f"{definitions['deletion_auc']} {definitions['insertion_auc']} {perturbation['steps']} steps. References "
        "(what deleted pixels become, where insertion starts): "
        + "; ".join(f"**{REFERENCE_LABELS[name]}**: {text}" for name, text in references.items()) + ".",
        "",
        settings["score_convention"],
        "",
    ]
    for curve, reading in (("deletion", "lower = more faithful"), ("insertion", "higher = more faithful")):
        columns = [(f"{curve}_auc_{name}", group, f"{REFERENCE_LABELS[name]}, {GROUP_LABELS[group]}")
                   for name in references for group in GROUPS]
        lines += _tables(report, columns, f"{curve.capitalize()} AUC ({reading})")
    return lines


def _concentration_lines(report: Dict[str, Any]) -> List[str]:
    definitions = report["definitions"]
    lines = ["## Concentration", "", f"- {definitions['sparseness_gini']}", f"- {definitions['complexity_entropy']}",
             ""]
    return lines + _tables(report, [(measure, "all", label) for measure, label in CONCENTRATION_COLUMNS],
                           "Concentration")


def _figure_lines(report: Dict[str, Any]) -> List[str]:
    return [
        "## Figure",
        "",
        "Columns: the original patch (with its fill), then CycleGAN-AM and the paper's Fig. 6 baselines; rows: "
        "benign and malignant test patches (correctly classified ones preferred, seeded). Every map is drawn with "
        "the module's colour table and blending (`CycleGANExplainLib.overlay`) on its own symmetric range [-L, +L]: "
        "the map is divided by its peak |value| and L = `symmetric_limit` of that (the 99.5th percentile of |map|, "
        "at least 5 % of the peak), printed in the method's own units under its title. The methods' units differ, "
        "so one shared range would blank all but one of them. Unsigned maps (saliency, Grad-CAM) are never blue.",
        "",
        f"![Fig. 6 style comparison]({report['files']['figure']})",
        "",
        "## Regenerate",
        "",
        "```",
        report["command"] or "(run through the Python API; no command recorded)",
        "```",
        "",
        "The sanity bundle (generators trained against a randomised classifier) comes from the existing commands:",
        "",
        "```",
        "cyclegan-explain-train randomise-classifier --classifier runs/classifier/classifier.pt --out runs/random",
        "cyclegan-explain-train train-cyclegan --dataset D --classifier runs/random/classifier.pt --out runs/gan-random",
        "cyclegan-explain-train export --dataset D --classifier runs/random/classifier.pt "
        "--cyclegan runs/gan-random/cyclegan.pt --out runs/sanity-bundle --name sanity-randomised-classifier",
        "```",
        "",
    ]


def _randomisation_lines(report: Dict[str, Any]) -> List[str]:
    randomisation, definitions = report["randomisation"], report["definitions"]
    lines = [
        "## Randomisation test",
        "",
        f"{definitions[RANDOMISATION_KEY]} The same for every model method: the same {randomisation['patches']} "
        "patches (a seeded draw from the compared ones), the same randomised classifier and the same similarity "
        f"({randomisation['similarity']}). Randomised classifier: {randomisation['randomised_classifier']}; "
        f"re-initialisation: {randomisation['re_initialisation']}. Lower = the map depends more on what the "
        "classifier learned.",
        "",
        "How CycleGAN-AM's test differs: the baselines' maps of the randomised classifier are computed from it "
        "directly. CycleGAN-AM's R = G+(x) - G-(x) comes from generators trained against a classifier, so its "
        "randomised map is the R of the sanity bundle, whose generators were trained (same commands and data) "
        "against that randomised classifier. Its Spearman therefore also carries the difference between two GAN "
        "training runs (initialisation, sampling), which lowers the correlation even where the classifier plays "
        "no part: a low value is weaker evidence for CycleGAN-AM than for a baseline. Without a sanity bundle it "
        "is not run (no number computed another way).",
        "",
    ]
    rows = []
    for key, info in report["methods"].items():
        estimate = randomisation["estimates"].get(key)
        rows.append([info["label"], _estimate_cell(estimate, randomisation["patches"]) if estimate is not None
                     else randomisation["not_run"][key]])
    lines += markdown_table(["Method", "Mean Spearman [95 % CI]"], rows) + [""]
    sanity = randomisation["cyclegan_am_flip_test"]
    if sanity is None:
        return lines + ["CycleGAN-AM flip test: not run (pass `--sanity-bundle`).", ""]
    trained, randomised = sanity["flip_rates_trained_generators"], sanity["flip_rates_randomised_generators"]
    lines += [
        f"CycleGAN-AM flip test (all {report['dataset']['n']} compared patches): the TRAINED classifier of this "
        f"bundle on G\u00b1(x) of this bundle and of the sanity bundle `{sanity['sanity_bundle']['name']} "
        f"{sanity['sanity_bundle']['version']}`. Generators that learned nothing about the trained classifier "
        "should not flip it.",
        "",
    ]
    rates = (("flipped_to_malignant", "Flipped to malignant by G+ (of those benign on x)"),
             ("flipped_to_benign", "Flipped to benign by G\u2212 (of those malignant on x)"),
             ("malignant_after_pos", "Malignant after G+ (all)"),
             ("benign_after_neg", "Benign after G\u2212 (all)"))
    lines += markdown_table(["Rate (metrics.flip_rates)", "This bundle's generators", "Sanity bundle's generators"],
                            [[text, number_text(trained[name]), number_text(randomised[name])]
                             for name, text in rates])
    means = sanity["mean_malignancy"]
    lines += ["", f"Mean malignancy: x {number_text(means['x'])}; this bundle's G+ {number_text(means['trained_g_pos'])}, "
              f"G\u2212 {number_text(means['trained_g_neg'])}; sanity bundle's G+ {number_text(means['randomised_g_pos'])}, "
              f"G\u2212 {number_text(means['randomised_g_neg'])}.", ""]
    return lines


def _speed_lines(report: Dict[str, Any]) -> List[str]:
    speed, stages = report["speed"], report["stage_seconds"]
    lines = ["## Speed", "", f"Maps per second on {speed['device']}, measured in this run, one method after "
             "another, each after one untimed warm-up map (imports, eager model). Batch 32: all compared patches; "
             f"batch 1: the first {speed['patches_at_batch_1']} one at a time. CycleGAN-AM's time is the module's "
             "full pass (both generators and three classifier outputs); the controls are numpy only. Anchor: "
             "Lenis et al. report "
             + ", ".join(f"{value:g} maps/s for {name}" for name, value in speed["anchor_maps_per_second"].items())
             + " (Titan RTX GPU, 576 x 448 px mammograms: not the same task or hardware). This run's wall time: "
             + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in stages.items()) + ".",
             ""]
    rows = [[info["label"], f"{speed['per_method'][method]['batch_1']['maps_per_second']:.1f}",
             f"{speed['per_method'][method]['batch_32']['maps_per_second']:.1f}"]
            for method, info in report["methods"].items()]
    return lines + markdown_table(["Method", "Batch 1 (maps/s)", "Batch 32 (maps/s)"], rows) + [""]


def write_report(comparison: Dict[str, Any], out_dir: Union[str, Path], resamples: int = 1000, seed: int = 0,
                 command: Optional[str] = None) -> Dict[str, Any]:
    """Write baselines.json, baselines.md and baselines.png to out_dir; returns the JSON's content."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # numpy values become plain ones, then NaN becomes null (strict JSON has no NaN)
    plain = json.loads(json.dumps(build_report(comparison, resamples, seed, command), default=lambda v: v.tolist()))
    report = json_safe(plain)
    examples = choose_examples(comparison["labels"], comparison["p_x"], FIGURE_EXAMPLES_PER_CLASS, seed)
    bundle, dataset = comparison["bundle"], comparison["dataset"]
    comparison_figure(out_dir / FIGURE_FILE, comparison["x"], comparison["maps"], comparison["labels"],
                      comparison["p_x"], examples,
                      title=f"{bundle['name']} {bundle['version']}" + ("" if bundle["trained"] else " (UNTRAINED)")
                      + f", {dataset['split']} split, {dataset['fill']} fill: each map on its own symmetric range")
    (out_dir / JSON_FILE).write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    (out_dir / MARKDOWN_FILE).write_text(render_markdown(report))
    return report
