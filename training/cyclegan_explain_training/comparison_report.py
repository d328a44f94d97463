"""The method comparison's report: baselines.json, baselines.md and baselines.png (issue 6, item 3).

Means come with percentile bootstrap 95 % CIs (metrics.bootstrap: every method and measure on the
same resamples, so they stay paired) and every baseline is compared with CycleGAN-AM patch by patch
(two-sided Wilcoxon signed-rank test, scipy). The figure follows the paper's Fig. 6: the original
patch, then CycleGAN-AM and the baselines, benign and malignant rows, drawn with the module's own
colour table and blending (CycleGANExplainLib.overlay), each map on its own symmetric range.
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

from .attribution_metrics import DEFINITIONS, PERTURBATION_STEPS
from .dataset import MALIGNANT
from .evaluate import _json_safe, _number, _with_ci
from .figures import choose_examples
from .metrics import bootstrap

JSON_FILE = "baselines.json"
MARKDOWN_FILE = "baselines.md"
FIGURE_FILE = "baselines.png"
CONFIDENCE = 0.95
FIGURE_METHODS = ("cyclegan-am", "deeplift-shap", "grad-cam", "integrated-gradients", "lrp")  # the paper's Fig. 6
FIGURE_EXAMPLES_PER_CLASS = 2
PANEL_INCHES = 2.0
# Lenis et al. 2020 (counterfactual impact analysis): on a Titan RTX GPU, mammograms of 576 x 448 px.
SPEED_ANCHOR = {"their single-pass attribution network": 75.0, "Grad-CAM": 50.0, "saliency": 31.0}

# (key, label, how to read it)
MEASURES = (
    ("relevance_mass_accuracy", "Relevance mass accuracy", "higher = more relevance on the nodule"),
    ("relevance_rank_accuracy", "Relevance rank accuracy", "higher = the top pixels are on the nodule"),
    ("pointing_game", "Pointing game (hit rate)", "higher = the peak is on the nodule"),
    ("deletion_auc", "Deletion AUC", "lower = deleting the top pixels destroys the decision sooner"),
    ("insertion_auc", "Insertion AUC", "higher = inserting the top pixels restores the decision sooner"),
    ("sparseness_gini", "Sparseness (Gini)", "higher = more concentrated"),
    ("complexity_entropy", "Complexity (entropy, nats)", "lower = more concentrated"),
)
RANDOMISATION = ("randomisation_spearman", "Randomisation test: Spearman(|map| trained, |map| randomised)",
                 "lower = depends more on what the classifier learned")


def paired_wilcoxon(baseline: np.ndarray, ours: np.ndarray) -> Dict[str, Any]:
    """Two-sided Wilcoxon signed-rank test of baseline - ours over patches where both are defined."""
    from scipy.stats import wilcoxon

    baseline, ours = np.asarray(baseline, dtype=np.float64), np.asarray(ours, dtype=np.float64)
    both = np.isfinite(baseline) & np.isfinite(ours)
    difference = baseline[both] - ours[both]
    result = {"n": int(both.sum()), "median_difference": float(np.median(difference)) if both.any() else math.nan,
              "statistic": math.nan, "p": math.nan}
    if np.any(difference != 0):  # all-equal pairs: no test (scipy would refuse or return NaN)
        test = wilcoxon(baseline[both], ours[both])
        result.update(statistic=float(test.statistic), p=float(test.pvalue))
    return result


def _nanmean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else math.nan


def summarise(per_patch: Dict[str, Dict[str, np.ndarray]], resamples: int, seed: int) -> Dict[str, Any]:
    """{measure: {method: Estimate dict with n}} with every method and measure on the same resamples."""
    methods = list(per_patch)
    measures = list(next(iter(per_patch.values())))
    n = len(per_patch[methods[0]][measures[0]])

    def statistics(indices: np.ndarray) -> Dict[str, float]:
        return {f"{measure}/{method}": _nanmean(per_patch[method][measure][indices])
                for method in methods for measure in measures}

    estimates = bootstrap(statistics, n, resamples, seed, CONFIDENCE)
    summary: Dict[str, Any] = {measure: {} for measure in measures}
    for key, estimate in estimates.items():
        measure, method = key.split("/")
        summary[measure][method] = {**estimate.as_dict(),
                                    "n": int(np.isfinite(per_patch[method][measure]).sum())}
    return summary


def build_report(comparison: Dict[str, Any], resamples: int, seed: int, command: Optional[str]) -> Dict[str, Any]:
    """The JSON document: settings, definitions, per-measure estimates and tests, sanity, speed, per-patch values."""
    methods: List[str] = comparison["methods"]
    per_patch = comparison["per_patch"]
    summary = summarise(per_patch, resamples, seed)
    tests = {measure: {key: paired_wilcoxon(per_patch[key][measure], per_patch[CYCLEGAN_AM][measure])
                       for key in methods if key != CYCLEGAN_AM} for measure in summary}
    randomisation = comparison["randomisation"]
    randomisation_summary = summarise({key: {RANDOMISATION[0]: values} for key, values in randomisation.items()},
                                      resamples, seed)[RANDOMISATION[0]] if randomisation else {}
    return {
        "bundle": comparison["bundle"],
        "dataset": comparison["dataset"],
        "methods": {key: {"label": method_info(key).label, "library": method_info(key).library,
                          "signed": method_info(key).signed} for key in methods},
        "settings": {
            "seed": seed, "bootstrap_resamples": resamples, "confidence": CONFIDENCE,
            "ci_method": "percentile bootstrap over patches, all methods and measures on the same resamples; "
                         "a resample's mean is over the patches where the measure is defined",
            "paired_test": "two-sided Wilcoxon signed-rank (scipy.stats.wilcoxon, zero differences dropped) of "
                           "baseline - CycleGAN-AM over the patches where both are defined",
            "magnitude": "every measure ranks or sums |map|: signed maps carry evidence in both directions",
            "perturbation_steps": PERTURBATION_STEPS,
            "randomisation_patches": comparison["randomisation_patches"],
        },
        "definitions": DEFINITIONS,
        "measures": {measure: {"estimates": summary[measure], "wilcoxon_vs_cyclegan_am": tests[measure]}
                     for measure in summary},
        "randomisation": {"estimates": randomisation_summary,
                          "cyclegan_am": comparison["cyclegan_sanity"]},
        "speed": {**comparison["speed"], "anchor_maps_per_second": SPEED_ANCHOR},
        "command": command,
        "per_patch": {key: {measure: values.tolist() for measure, values in measures.items()}
                      for key, measures in per_patch.items()},
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


def _estimate_cell(estimate: Optional[Dict[str, Any]]) -> str:
    return "not run" if estimate is None else f"{_with_ci(estimate)} (n = {estimate['n']})"


def _test_cell(test: Optional[Dict[str, Any]]) -> str:
    if test is None:
        return ""
    p = "n/a" if test["p"] is None else f"{test['p']:.3g}"
    return f"{_number(test['median_difference'])} | {p} (n = {test['n']})"


def render_markdown(report: Dict[str, Any]) -> str:
    bundle, dataset, settings = report["bundle"], report["dataset"], report["settings"]
    methods = report["methods"]
    lines = [f"# Attribution methods compared: {bundle['name']} {bundle['version']}", ""]
    if not bundle["trained"]:
        lines += ["**UNTRAINED bundle (random weights): these numbers only test the pipeline.**", ""]
    lines += [
        f"Split `{dataset['split']}` of `{dataset['directory']}`: n = {dataset['n']} of {dataset['split_size']} "
        f"patches ({dataset['benign']} benign, {dataset['malignant']} malignant"
        + (f"; {dataset['limit']} drawn at random with seed {settings['seed']}" if dataset["limit"] else "")
        + f"); manifest SHA-256 `{dataset['manifest_sha256']}`. Every method explains the same classifier "
        "(the bundle's) on the same patches, normalised with the bundle's HU window "
        f"{bundle['hu_window']}.",
        "",
        f"Statistics: {settings['ci_method']}; {settings['bootstrap_resamples']} resamples. Paired test: "
        f"{settings['paired_test']}. Magnitudes: {settings['magnitude']}. n/a = undefined.",
        "",
        "Methods: " + "; ".join(f"**{info['label']}** ({info['library']}"
                                 + ("" if info["signed"] else ", unsigned") + ")" for info in methods.values()) + ".",
        "",
    ]
    for key, label, reading in MEASURES:
        measure = report["measures"][key]
        lines += [f"## {label}", "", f"{reading}. {report['definitions'][key]}", "",
                  "| Method | Mean [95 % CI] | Median difference vs CycleGAN-AM | Wilcoxon p |", "|---|---|---|---|"]
        for method, info in methods.items():
            test = measure["wilcoxon_vs_cyclegan_am"].get(method)
            lines.append(f"| {info['label']} | {_estimate_cell(measure['estimates'][method])} | "
                         + (_test_cell(test) if test else "(reference) | ") + " |")
        lines.append("")
    lines += _sanity_lines(report)
    lines += _speed_lines(report)
    lines += [
        "## Figure",
        "",
        "Columns: the original patch, then CycleGAN-AM and the paper's Fig. 6 baselines; rows: benign and "
        "malignant test patches (correctly classified ones preferred, seeded). Every map is drawn with the "
        "module's colour table and blending (`CycleGANExplainLib.overlay`) on its own symmetric range "
        "[-L, +L]: the map is divided by its peak |value| and L = `symmetric_limit` of that (the 99.5th percentile "
        "of |map|, at least 5 % of the peak), printed in the method's own units under its title. The methods' "
        "units differ, so one shared range would blank all but one of them. Unsigned "
        "maps (saliency, Grad-CAM) are never blue.",
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
    return "\n".join(lines)


def _sanity_lines(report: Dict[str, Any]) -> List[str]:
    settings, randomisation = report["settings"], report["randomisation"]
    key, label, reading = RANDOMISATION
    lines = [f"## {label}", "", f"{reading}. {report['definitions'][key]} Baselines: the first "
             f"{settings['randomisation_patches']} compared patches. CycleGAN-AM: |R| of this bundle against |R| "
             "of the sanity bundle, whose generators were trained against a randomised classifier (when given).",
             "", "| Method | Mean Spearman [95 % CI] |", "|---|---|"]
    for method, info in report["methods"].items():
        lines.append(f"| {info['label']} | {_estimate_cell(randomisation['estimates'].get(method))} |")
    sanity = randomisation["cyclegan_am"]
    lines.append("")
    if sanity is None:
        lines += ["CycleGAN-AM flip test: not run (pass `--sanity-bundle`).", ""]
        return lines
    trained, randomised = sanity["flip_rates_trained_generators"], sanity["flip_rates_randomised_generators"]
    lines += [
        f"CycleGAN-AM flip test: the TRAINED classifier of this bundle on G\u00b1(x) of this bundle and of the "
        f"sanity bundle `{sanity['sanity_bundle']['name']} {sanity['sanity_bundle']['version']}`. Generators "
        "that learned nothing about the trained classifier should not flip it.",
        "",
        "| Rate (metrics.flip_rates) | This bundle's generators | Sanity bundle's generators |",
        "|---|---|---|",
    ]
    for name, text in (("flipped_to_malignant", "Flipped to malignant by G+ (of those benign on x)"),
                       ("flipped_to_benign", "Flipped to benign by G\u2212 (of those malignant on x)"),
                       ("malignant_after_pos", "Malignant after G+ (all)"),
                       ("benign_after_neg", "Benign after G\u2212 (all)")):
        lines.append(f"| {text} | {_number(trained[name])} | {_number(randomised[name])} |")
    means = sanity["mean_malignancy"]
    lines += ["", f"Mean malignancy: x {_number(means['x'])}; this bundle's G+ {_number(means['trained_g_pos'])}, "
              f"G\u2212 {_number(means['trained_g_neg'])}; sanity bundle's G+ {_number(means['randomised_g_pos'])}, "
              f"G\u2212 {_number(means['randomised_g_neg'])}.", ""]
    return lines


def _speed_lines(report: Dict[str, Any]) -> List[str]:
    speed = report["speed"]
    lines = ["## Speed", "", f"Maps per second on {speed['device']}, measured in this run, one method after "
             "another, each after one untimed warm-up map (imports, eager model). Batch 32: all compared patches; "
             "batch 1: the first 16 one at a time. CycleGAN-AM's time is the module's full pass (both generators "
             "and three classifier outputs). Anchor: Lenis et al. report "
             + ", ".join(f"{value:g} maps/s for {name}" for name, value in speed["anchor_maps_per_second"].items())
             + " (Titan RTX GPU, 576 x 448 px mammograms: not the same task or hardware).",
             "", "| Method | Batch 1 (maps/s) | Batch 32 (maps/s) |", "|---|---|---|"]
    for method, info in report["methods"].items():
        runs = speed["per_method"][method]
        lines.append(f"| {info['label']} | {runs['batch_1']['maps_per_second']:.1f} | "
                     f"{runs['batch_32']['maps_per_second']:.1f} |")
    return lines + [""]


def write_report(comparison: Dict[str, Any], out_dir: Union[str, Path], resamples: int = 1000, seed: int = 0,
                 command: Optional[str] = None) -> Dict[str, Any]:
    """Write baselines.json, baselines.md and baselines.png to out_dir; returns the JSON's content."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # numpy values become plain ones, then NaN becomes null (strict JSON has no NaN)
    plain = json.loads(json.dumps(build_report(comparison, resamples, seed, command), default=lambda v: v.tolist()))
    report = _json_safe(plain)
    examples = choose_examples(comparison["labels"], comparison["p_x"], FIGURE_EXAMPLES_PER_CLASS, seed)
    bundle = comparison["bundle"]
    comparison_figure(out_dir / FIGURE_FILE, comparison["x"], comparison["maps"], comparison["labels"],
                      comparison["p_x"], examples,
                      title=f"{bundle['name']} {bundle['version']}" + ("" if bundle["trained"] else " (UNTRAINED)")
                      + f", {comparison['dataset']['split']} split: each map on its own symmetric range")
    (out_dir / JSON_FILE).write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    (out_dir / MARKDOWN_FILE).write_text(render_markdown(report))
    return report
