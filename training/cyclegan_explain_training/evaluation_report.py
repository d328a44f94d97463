"""The human-readable evaluation report (evaluation.md) of a result as evaluate() returns it.

One table per figure group, the conditions side by side (and extra bundles' generators beside
the main bundle's), each with a line saying how to read it.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from .metrics import TABLE1_METRICS
from .reporting import UNTRAINED_BANNER, entry_at, estimate_text, markdown_table, number_text

METRIC_LABELS = {
    "accuracy": "Accuracy", "f1": "F1", "sensitivity": "Sensitivity", "specificity": "Specificity",
    "ppv": "PPV", "npv": "NPV", "informedness": "Informedness", "markedness": "Markedness",
    "mcc": "MCC", "auc": "AUC",
}
IMAGE_LABELS = {"x": "x", "g_neg": "G\u2212(x)", "g_pos": "G+(x)"}
SUSPICIOUS = "rated suspicious by readers"


def _condition_table(result: Dict[str, Any], section: str, rows: Sequence[Tuple[str, str]]) -> List[str]:
    """Rows (label, path within section/<condition>/), one column per condition."""
    conditions = result["conditions"]
    header = ["Figure"] + [c["label"] for c in conditions]
    body = [[label] + [estimate_text(entry_at(result[section], f"{c['key']}/{path}")) for c in conditions]
            for label, path in rows]
    return markdown_table(header, body)


def _generator_columns(result: Dict[str, Any]) -> List[Tuple[str, str, str]]:
    """(condition key, bundle label, header) for every condition and generator bundle."""
    bundles = result["generator_bundles"]
    columns = []
    for condition in result["conditions"]:
        for label, bundle in bundles.items():
            seed = bundle.get("cyclegan_seed")
            name = "this bundle" if label == "main" else f"{label} ({bundle['name']}"
            if label != "main":
                name += f", GAN seed {seed})" if seed is not None else ")"
            header = condition["label"] if len(bundles) == 1 else f"{condition['label']}: {name}"
            columns.append((condition["key"], label, header))
    return columns


def _generator_table(result: Dict[str, Any], rows: Sequence[Tuple[str, str]], first: str = "Figure") -> List[str]:
    """Rows (label, path below generators/<bundle>/<condition>/, or chance_levels:<path> below
    chance_levels/<condition>/); one column per condition and generator bundle."""
    columns = _generator_columns(result)
    header = [first] + [column[2] for column in columns]
    body = []
    for label, path in rows:
        row = [label]
        for condition, bundle, _ in columns:
            if path.startswith("chance_levels:"):
                row.append(estimate_text(entry_at(result["chance_levels"], f"{condition}/{path.split(':', 1)[1]}")))
            else:
                row.append(estimate_text(entry_at(result["generators"], f"{bundle}/{condition}/{path}")))
        body.append(row)
    return markdown_table(header, body)


def render_markdown(result: Dict[str, Any]) -> str:
    """The human-readable report of a result as ``evaluate`` returns it."""
    bundle, dataset, settings = result["bundle"], result["dataset"], result["settings"]
    lines = [f"# Evaluation of {bundle['name']} {bundle['version']}", ""]
    if not bundle["trained"]:
        lines += [UNTRAINED_BANNER, ""]
    lines += [
        f"Split `{dataset['split']}` of `{dataset['directory']}` (source: {dataset.get('source') or 'not recorded'}): "
        f"n = {dataset['n']} nodules ({dataset['malignant']} {SUSPICIOUS}, {dataset['benign']} not); manifest "
        f"SHA-256 `{dataset['manifest_sha256']}`.",
        f"Label: \"{SUSPICIOUS}\" is the dataset's label 1 ({dataset.get('label') or 'not recorded'}), not a "
        "pathology result; the classifier's \"malignant\" class is trained on it, and \"malignant\" or \"benign\" "
        "below is the classifier's decision (or a generator's target), never the truth.",
        f"95 % CIs: {settings['ci_method']}; {settings['bootstrap_resamples']} resamples, seed {settings['seed']}. "
        f"Thresholded metrics at malignancy probability \u2265 {settings['decision_threshold']}; "
        f"n/a = undefined (zero denominator or one class only), or resting on fewer than "
        f"{settings.get('min_stratum', 5)} nodules (of a label, in a stratum).",
        "",
        settings.get("paper_comparison", ""),
        "",
        "## Conditions",
        "",
        "Every figure is reported under each condition: the view (the nodule's centre, or the seed moved 2 mm) and "
        "the fill of the pixels that hold no image beyond the nodule's sub-volume (air: -1000 HU as the command "
        "line samples it; lung: parenchyma-like texture).",
        "",
    ]
    lines += markdown_table(["Key", "Condition", "n"], [[c["key"], c["label"], str(c["n"])] for c in result["conditions"]])
    for reason in result["conditions_left_out"]:
        lines.append(f"- Left out: {reason}.")
    lines += _classifier_sections(result) + _calibration_section(result) + _generator_sections(result)
    lines += _target_section(result)
    examples = result.get("examples")
    lines += ["", "## Examples", ""]
    if examples:
        lines += [f"Chosen by label only: {examples['rule']} ({examples['condition']}).", ""]
    lines += [f"![Examples: x, G\u2212(x), G+(x), R]({result['files']['figure']})", ""]
    return "\n".join(lines)


def _classifier_sections(result: Dict[str, Any]) -> List[str]:
    lines = ["", "## Classifier (Table 1)", "",
             "How to read: each metric of the classifier on x, per condition, against the label "
             f"{SUSPICIOUS}. The AUC target asks for \u2265 0.90 in every column; the columns other than the "
             "first hold chance (a shift direction, a lung texture): see the draws below.", ""]
    lines += _condition_table(result, "classifier", [(METRIC_LABELS[name], name) for name in TABLE1_METRICS])
    models = result["reference_models"]
    two = models["two_feature"]
    coefficients = ", ".join(f"{name} {value:+.3f}" for name, value in zip(two["features"],
                                                                          two["coefficients_standardised"]))
    lines += [
        "", "## Simple baselines beside the classifier", "",
        "How to read: the AUC of each simple score on its own, and the paired difference (same resamples) between "
        "the classifier's AUC and the baseline's; a difference whose CI excludes 0 is a real gap. Visible area = "
        "the number of patch pixels that hold real image (a spurious size cue if it beat the diameter).",
        "",
        f"Fitted on the train split's centre views: two-feature logistic regression ({coefficients}; standardised "
        f"coefficients, classes balanced); diameter cut-off for accuracy from a one-feature logistic regression.",
        "",
    ]
    lines += _condition_table(result, "baselines", [
        ("Diameter-only AUC", "diameter_auc"),
        ("Two-feature AUC (log mask area, mean HU in mask)", "two_feature_auc"),
        ("Visible-area AUC", "visible_area_auc"),
        ("Classifier AUC \u2212 diameter AUC", "classifier_minus_diameter_auc"),
        ("Classifier AUC \u2212 two-feature AUC", "classifier_minus_two_feature_auc"),
        ("Visible-area AUC \u2212 diameter AUC", "visible_area_minus_diameter_auc"),
        ("Diameter accuracy", "diameter_accuracy"),
        ("Two-feature accuracy", "two_feature_accuracy"),
    ])
    edges = models["diameter_tertile_edges_mm"]
    counts = models["tertile_counts"]
    bounds = {"small": f"< {edges[0]:.1f} mm", "middle": f"{edges[0]:.1f}\u2013{edges[1]:.1f} mm",
              "large": f"\u2265 {edges[1]:.1f} mm"}
    lines += ["", "## By diameter tertile", "",
              "How to read: within nodules of similar size the diameter explains less; a classifier that only "
              "measured size would fall to the diameter's AUC here. Tertile edges from the train split's centre "
              "views.", ""]
    rows = []
    for tertile, bound in bounds.items():
        count = counts[tertile]
        name = f"{tertile} ({bound}; n = {count['n']}, {count['malignant']} rated suspicious)"
        rows += [(f"{name}: classifier AUC", f"{tertile}/classifier_auc"),
                 (f"{name}: diameter AUC", f"{tertile}/diameter_auc"),
                 (f"{name}: classifier accuracy", f"{tertile}/classifier_accuracy"),
                 (f"{name}: diameter accuracy", f"{tertile}/diameter_accuracy")]
    lines += _condition_table(result, "tertiles", rows)
    return lines + _size_matched_section(result) + _draws_section(result)


def _size_matched_rows(entry: Dict[str, Any]) -> List[Tuple[str, str]]:
    """(label, path within one size_matched entry) of its table."""
    scores = entry["scores"]
    rows = [(f"Pair concordance: {label}", f"concordance/{name}") for name, label in scores.items()]
    rows += [(f"Classifier \u2212 {scores[name].split(' (')[0]}: pair concordance", f"classifier_minus/concordance/{name}")
             for name in scores if name != "classifier"]
    rows += [(f"AUC (all nodules): {label}", f"auc/{name}") for name, label in scores.items()]
    rows += [(f"Classifier \u2212 {scores[name].split(' (')[0]}: AUC", f"classifier_minus/auc/{name}")
             for name in scores if name != "classifier"]
    return rows


def _size_matched_table(entries: Dict[str, Dict[str, Any]], headers: Dict[str, str]) -> List[str]:
    """One column per entry (a condition, or a fill on the validation patients)."""
    keys = list(entries)
    rows = _size_matched_rows(entries[keys[0]])
    body = [["Matched pairs (rated-suspicious / not-suspicious nodules in them)"]
            + [f"{entries[key]['pairs']} ({entries[key]['nodules_in_pairs']['rated_suspicious']} / "
               f"{entries[key]['nodules_in_pairs']['not_suspicious']})" for key in keys]]
    body += [[label] + [estimate_text(entry_at(entries[key], path)) for key in keys] for label, path in rows]
    return markdown_table(["Figure"] + [headers[key] for key in keys], body)


def _size_matched_section(result: Dict[str, Any]) -> List[str]:
    matched = result.get("size_matched")
    if not matched:
        return []
    labels = {c["key"]: c["label"] for c in result["conditions"]}
    first = next(iter(matched["test"].values()))
    lines = ["", "## Size-matched pairs: is the classifier more than size?", "",
             f"How to read: every pair of a nodule {SUSPICIOUS} and one not whose diameters differ by at most "
             f"{first['tolerance_mm']:g} mm; the share of these pairs a score ranks correctly (the suspicious one "
             "higher, a tie counting one half; 0.5 = chance). Within the pairs size is nearly used up: the diameter's "
             "and the mask area's shares are the size-only baseline (the size difference left over), the classifier's "
             "is what it sees beyond size. AUC over all nodules beside. 95 % CIs: patient bootstrap (all nodules of "
             "a drawn patient, pairs re-formed in each resample), differences paired. Target (issue 21): pair "
             "concordance \u2265 0.75 and AUC not below the diameter's.", "",
             f"Split `{result['dataset']['split']}`, {first['n']} nodules of {first['patients']} patients (final "
             "evaluation: no choice is made on it):", ""]
    lines += _size_matched_table(matched["test"], labels)
    validation = next(iter(matched["validation"].values()), None)
    lines += ["", f"Validation patients: {matched['validation_patients']}"
              + (f", {validation['n']} nodules of {validation['patients']} patients" if validation else "")
              + ". Choices (of a classifier, of settings) are made here.", ""]
    if matched["validation"]:
        lines += _size_matched_table(matched["validation"], matched["validation_labels"])
    else:
        lines.append("Not measured: the validation patients cannot be recomputed.")
    return lines


def _spread_text(spread: Optional[Dict[str, Any]]) -> str:
    if not spread or spread["mean"] is None:
        return "n/a"
    sd = "n/a" if spread["sd"] is None else f"{spread['sd']:.3f}"
    text = f"{spread['mean']:.3f} (SD {sd}; {spread['min']:.3f}\u2013{spread['max']:.3f})"
    return text + (f" ({spread['undefined_draws']} draws undefined)" if spread["undefined_draws"] else "")


def _draws_section(result: Dict[str, Any]) -> List[str]:
    draws = result.get("condition_draws")
    if not draws:
        return []
    lines = ["", f"## The random conditions over {draws['draws']} draws", "",
             "How to read: a condition that holds chance (the seed's 2 mm shift direction, the lung texture beyond "
             "the sub-volume) is one draw in the tables above; here it is redrawn, every nodule each time "
             f"({draws['rule']}), and the classifier's figure is given as mean (SD; lowest\u2013highest) over the "
             "draws, beside the tables' single draw. The centre view with air beyond the box holds no chance.", ""]
    if not draws["conditions"]:
        return lines + ["No condition holds chance here: every patch is image everywhere and there is no "
                        "seed-shifted view."]
    rows = []
    for key, entry in draws["conditions"].items():
        single = entry["single_draw_auc"]
        rows.append([entry["label"], entry["redrawn"] + (f" ({entry['note']})" if entry["note"] else ""),
                     "n/a" if single is None else f"{single:.3f}", _spread_text(entry["auc"]),
                     _spread_text(entry["accuracy"])])
    lines += markdown_table(["Condition", "Redrawn", "AUC, single draw (tables above)", "AUC over the draws",
                             "Accuracy over the draws"], rows)
    lines += ["", "Worst condition's AUC per draw (the AUC target is judged on the worst condition): "
              + _spread_text(draws["worst_condition_auc"]) + "."]
    return lines


def _calibration_section(result: Dict[str, Any]) -> List[str]:
    temperature = result["reference_models"]["temperature"]
    lines = ["", "## Calibration", "",
             "How to read: ECE = count-weighted mean gap between predicted malignancy and the observed share rated "
             "suspicious by readers in 10 equal-width bins (0 = calibrated). Temperature scaling divides the logit margin by one T "
             "fitted on validation patients (never test) and leaves the AUC unchanged.", ""]
    if temperature["fitted"]:
        lines.append(f"T = {temperature['temperature']:.3f}, fitted on {temperature['fitted_on']} "
                     f"({temperature['validation_nodules']} nodules, {temperature['validation_patients']} patients).")
        if temperature.get("note"):
            lines.append(f"Note: {temperature['note']}.")
    else:
        lines.append(f"Not fitted: {temperature['reason']}.")
    lines.append("")
    lines += _condition_table(result, "calibration", [
        ("ECE before scaling", "ece_before"), ("ECE after scaling", "ece_after"),
        ("Change (after \u2212 before)", "ece_change")])
    if temperature["fitted"]:
        lines += ["", "Does temperature scaling help? " + "; ".join(
            f"{c['label']}: {result['calibration'][c['key']].get('verdict', 'undefined')}" for c in result["conditions"])
            + "."]
    lines += ["", f"![Reliability diagrams]({result['files']['reliability']})"]
    return lines


def _generator_sections(result: Dict[str, Any]) -> List[str]:
    return (_domain_transfer_section(result) + _flips_section(result) + _similarity_section(result)
            + _relevance_section(result) + _changes_section(result))


def _domain_transfer_section(result: Dict[str, Any]) -> List[str]:
    lines = ["", "## Domain transfer (Sec. 4.1)", "",
             "How to read: the classifier's mean malignancy output on x and on each generator's output; G+ should "
             "push it up (target \u2265 0.85), G\u2212 down (\u2264 0.15).", ""]
    lines += _generator_table(result, [(f"Mean output on {IMAGE_LABELS[name]}", f"domain_transfer/{name}")
                                       for name in ("x", "g_neg", "g_pos")])
    lines += ["", "How to read: paired two-sided t-tests of the outputs.", ""]
    rows = []
    for condition, bundle, header in _generator_columns(result):
        tests = result["generators"][bundle][condition]["t_tests"]
        cells = []
        for name in ("g_pos_vs_x", "x_vs_g_neg"):
            test = tests[name]
            p_value = "n/a" if test["p"] is None else f"{test['p']:.3g}"
            cells.append(f"{number_text(test['mean_difference'])}; t = {number_text(test['t'])} ({test['df']}), "
                         f"p = {p_value}")
        rows.append([header] + cells)
    return lines + markdown_table(["Condition", "G+(x) \u2212 x", "x \u2212 G\u2212(x)"], rows)


def _flips_section(result: Dict[str, Any]) -> List[str]:
    lines = ["", "## Decision flips", "",
             "How to read: of the nodules the classifier calls benign on x, the share G+ turns malignant, and "
             "conversely for G\u2212 (targets \u2265 0.90).", ""]
    return lines + _generator_table(result, [
        ("Flipped to malignant by G+ (of those benign on x)", "flip_rates/flipped_to_malignant"),
        ("Flipped to benign by G\u2212 (of those malignant on x)", "flip_rates/flipped_to_benign"),
        ("Malignant after G+ (all nodules)", "flip_rates/malignant_after_pos"),
        ("Benign after G\u2212 (all nodules)", "flip_rates/benign_after_neg")])


def _similarity_section(result: Dict[str, Any]) -> List[str]:
    settings = result["settings"]
    ssim, skimage = settings["ssim"], settings["skimage_ssim"]
    near = settings["regions_mm"]["similarity_near_nodule"]
    lines = ["", "## Similarity to the input", "",
             f"How to read: SSIM 1 = identical. The project's SSIM: {ssim['implementation']}, data range "
             f"{ssim['data_range']}, Gaussian window {ssim['window']} px (sigma {ssim['sigma']}); scikit-image's: "
             f"{skimage['implementation']}, data range {skimage['data_range']} on [-1, 1]. '{near:g} mm' = only the "
             f"pixels within {near:g} mm of the nodule's mask. The unrelated-pair rows are the floor: "
             f"{settings['similarity_floor']}. L1: mean absolute difference in normalised units.", ""]
    rows = []
    for image in ("g_pos", "g_neg"):
        label = IMAGE_LABELS[image]
        rows += [(f"SSIM(x, {label}), project", f"similarity/ssim_x_{image}"),
                 (f"SSIM(x, {label}), project, {near:g} mm", f"similarity/ssim_15mm_x_{image}"),
                 (f"SSIM(x, {label}), scikit-image", f"similarity/skimage_ssim_x_{image}"),
                 (f"SSIM(x, {label}), scikit-image, {near:g} mm", f"similarity/skimage_ssim_15mm_x_{image}")]
    rows += [("Floor: unrelated pair, project", "chance_levels:similarity/ssim_unrelated"),
             (f"Floor: unrelated pair, project, {near:g} mm", "chance_levels:similarity/ssim_15mm_unrelated"),
             ("Floor: unrelated pair, scikit-image", "chance_levels:similarity/skimage_ssim_unrelated"),
             (f"Floor: unrelated pair, scikit-image, {near:g} mm", "chance_levels:similarity/skimage_ssim_15mm_unrelated"),
             ("L1(x, G+(x))", "similarity/l1_x_g_pos"), ("L1(x, G\u2212(x))", "similarity/l1_x_g_neg")]
    return lines + _generator_table(result, rows)


def _relevance_section(result: Dict[str, Any]) -> List[str]:
    """Where R lies, and whether the change near the nodule alone moves the classifier."""
    lines = ["", "## Where R = G+(x) \u2212 G\u2212(x) lies", "",
             "How to read: the share of sum |R| inside the nodule's mask and within 5 and 10 mm of it; the "
             "'uniform' rows are the share of the patch's area there (what a map spread evenly would get). "
             "Target: at least half within 5 mm.", ""]
    lines += _generator_table(result, [
        ("|R| in the mask", "relevance_shares/in_mask"),
        ("|R| within 5 mm", "relevance_shares/within_5mm"),
        ("|R| within 10 mm", "relevance_shares/within_10mm"),
        ("Uniform: area in the mask", "chance_levels:relevance_shares/in_mask"),
        ("Uniform: area within 5 mm", "chance_levels:relevance_shares/within_5mm"),
        ("Uniform: area within 10 mm", "chance_levels:relevance_shares/within_10mm")])
    lines += ["", "## Counterfactual sufficiency", "",
              "How to read: G\u00b1(x) pasted into x only within 5 mm of the nodule's mask (x elsewhere), or only "
              "outside it; how often that alone flips the decision, in the flips' directions. High inside and low "
              "outside: the change near the nodule is what moves the classifier.", ""]
    lines += _generator_table(result, [
        ("G+ within 5 mm: flipped to malignant", "counterfactual/inside_5mm/flipped_to_malignant"),
        ("G\u2212 within 5 mm: flipped to benign", "counterfactual/inside_5mm/flipped_to_benign"),
        ("G+ outside 5 mm: flipped to malignant", "counterfactual/outside_5mm/flipped_to_malignant"),
        ("G\u2212 outside 5 mm: flipped to benign", "counterfactual/outside_5mm/flipped_to_benign"),
        ("Whole G+(x): flipped to malignant", "flip_rates/flipped_to_malignant"),
        ("Whole G\u2212(x): flipped to benign", "flip_rates/flipped_to_benign")])
    return lines


def _changes_section(result: Dict[str, Any]) -> List[str]:
    lines = ["", "## What the generators change: size or density", "",
             f"How to read: {result['changes_definition']}; compare each generator's column with x's.", ""]
    rows = []
    for name in ("x", "g_neg", "g_pos"):
        rows += [(f"Soft-tissue area near the centre (mm\u00b2), {IMAGE_LABELS[name]}",
                  f"changes/soft_tissue_area_mm2_{name}"),
                 (f"Mean HU inside the nodule's mask, {IMAGE_LABELS[name]}", f"changes/mean_hu_in_mask_{name}")]
    lines += _generator_table(result, rows)
    return lines


def _target_section(result: Dict[str, Any]) -> List[str]:
    labels = {c["key"]: c["label"] for c in result["conditions"]}
    lines = ["", "## Targets for the shipped bundle", "",
             "How to read: MET or MISSED with the value it was judged on; a target for every condition is judged on "
             "the worst one, the others on the primary condition (first column); all conditions' values beside.", ""]
    header = ["Target", "Judged on", "Value", "Result"] + [labels[key] for key in labels] + ["Met in every condition"]
    rows = []
    for target in result["targets"]:
        comparison = "\u2265" if target["comparison"] == ">=" else "\u2264"
        if target["margin"] is None:
            verdict = "MISSED (undefined)"
        else:
            verdict = f"{target['verdict']} by {abs(target['margin']):.3f}"
        rows.append([f"{target['description']} {comparison} {target['target']}", labels[target["judged_on"]],
                     number_text(target["value"]), verdict]
                    + [number_text(target["by_condition"][key]) for key in labels]
                    + ["yes" if target["met_under_every_condition"] else "no"])
    return lines + markdown_table(header, rows)
