"""The human-readable counterfactual audit (audit.md) of a result as counterfactual_audit.audit returns it."""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

from .reporting import UNTRAINED_BANNER, entry_at, estimate_text, markdown_table, number_text

GENERATOR_COLUMNS = (("g_pos", "G+(x)"), ("g_neg", "G\u2212(x)"))


def _cell(figures: Dict[str, Any], path: str) -> str:
    entry = entry_at(figures, path)
    if entry is None:
        return "not measured"
    if entry.get("value") is None:
        return "n/a"
    return estimate_text(entry)


def _table(figures: Dict[str, Any], header: Sequence[str], rows: Sequence[Tuple[str, Sequence[str]]]) -> List[str]:
    """Rows (label, paths): one cell per path."""
    return markdown_table(header, [[label, *(_cell(figures, path) for path in paths)] for label, paths in rows])


def render_audit(result: Dict[str, Any]) -> str:
    figures, settings, dataset = result["figures"], result["settings"], result["dataset"]
    bundle = result["bundle"]
    lines = [f"# Counterfactual audit: {bundle['name']} {bundle['version']}", ""]
    if not bundle["trained"]:
        lines += [UNTRAINED_BANNER, ""]
    lines += [
        f"{dataset['split'].capitalize()} split, centre views, air beyond the valid box (the patch as the command "
        "line samples it): "
        f"{dataset['n']} nodules of {dataset['patients']} patients, {dataset['rated_suspicious']} "
        f"{settings['positive_class']}. Everything fitted here (detectors, size model, the Gaussian's width) is "
        f"fitted on the train split ({dataset['train_nodules']} nodules of {dataset['train_patients']} patients). "
        f"Values: estimate [95 % CI], {settings['ci_method']}; {settings['bootstrap_resamples']} resamples. "
        f"A stratum with fewer than {settings['min_stratum']} nodules (of either class, for an AUC) is n/a. "
        "\"Suspicious\" means rated suspicious by readers (label 1), or called so by a model at p >= "
        f"{settings['decision_threshold']}.",
        "",
    ]
    if dataset["split"] == "validation":
        lines += ["For model choices: \"train\" below means the fitting patients of the classifier "
                  f"{dataset['validation_of']}, \"test\" its validation patients (in this report); the test split was not read.", ""]
    lines += [
        "## Targets",
        "",
    ]
    lines += markdown_table(["Target", "Bound", "Value", "Verdict"], [
        [target["description"], f"{target['comparison']} {target['target']:g}", number_text(target["value"]),
         target["verdict"]] for target in result["targets"]])
    lines += ["", *_realism(result), *_bright_core(result), *_beyond_box(result), *_transfer(result),
              *_similarity(result), *_relevance(result), *_ablations(result)]
    return "\n".join(lines) + "\n"


def _per_generator(figures: Dict[str, Any], rows: Sequence[Tuple[str, str]]) -> List[str]:
    """Rows (label, path with {generator})."""
    return _table(figures, ["Figure", *(name for _, name in GENERATOR_COLUMNS)],
                  [(label, [path.format(generator=key) for key, _ in GENERATOR_COLUMNS]) for label, path in rows])


def _realism(result: Dict[str, Any]) -> List[str]:
    figures, detectors = result["figures"], result["detectors"]
    lines = ["## 1. Realism: can a detector tell G(x) from x?", "",
             f"CNN: {detectors['cnn']['architecture']}, {detectors['cnn']['epochs']} epochs, "
             f"{detectors['cnn']['optimiser']}, seed {detectors['cnn']['seed']}; texture: logistic regression on "
             f"{'; '.join(detectors['texture']['features'])}. Both trained on {detectors['cnn']['fitted_on']}, "
             f"tested on test patients; input: {detectors['input']}. 0.5 = indistinguishable.", ""]
    lines += _per_generator(figures, [("CNN detector AUC", "realism/cnn_detector_auc/{generator}"),
                                      ("Texture detector AUC", "realism/texture_detector_auc/{generator}")])
    lines += ["", "Texture features, test mean (x beside G(x)):", ""]
    rows = [(f"{feature}, {name}", [f"realism/texture_features/{feature}/{key}"])
            for feature in ("lung_local_sd_hu", "share_at_window_top", "log_gradient_energy")
            for key, name in (("x", "x"), *GENERATOR_COLUMNS)]
    lines += _table(figures, ["Feature, image", "Mean"], rows)
    return lines + [""]


def _bright_core(result: Dict[str, Any]) -> List[str]:
    figures = result["figures"]
    lines = ["## 2. Bright-core insertion", "", result["settings"]["bright_core"] + ".", ""]
    lines += _table(figures, ["Generator", "Among the nodules it should flip", "All nodules"], [
        ("G\u2212 (nodules called suspicious)", ["bright_core/g_neg/called_suspicious", "bright_core/g_neg/all_nodules"]),
        ("G+ (nodules called not suspicious)", ["bright_core/g_pos/called_not_suspicious",
                                                "bright_core/g_pos/all_nodules"]),
    ])
    return lines + [""]


def _beyond_box(result: Dict[str, Any]) -> List[str]:
    lines = ["## 3. Change beyond the valid box", "", result["settings"]["beyond_box"] + ".", ""]
    lines += _per_generator(result["figures"], [
        (f"{label}, {fill} fill", f"beyond_box/{{generator}}/{fill}/{key}") for fill in ("air", "lung")
        for label, key in (("Share of patches within tolerance", "share_within_tolerance"),
                           ("Median mean |change| (HU)", "median_change_hu"),
                           ("Mean mean |change| (HU)", "mean_change_hu"),
                           ("Share of patches with largest |change| > 35 HU", "share_largest_above_35hu"),
                           ("Median largest |change| (HU)", "median_largest_change_hu"))])
    return lines + [""]


def _transfer(result: Dict[str, Any]) -> List[str]:
    figures, models = result["figures"], result["transfer_models"]
    held_out = models.get("held_out_classifier")
    described = (f"held-out classifier: {held_out['architecture']} from {held_out['path']}" if held_out
                 else "no held-out classifier given (--held-out-classifier)")
    lines = ["## 4. Transfer: the same G(x) on other models, each on its own decisions", "",
             f"G+ flips among the nodules that model calls not suspicious, G\u2212 among those it calls suspicious; "
             f"{described}; size-only: {result['settings']['size_only_model']}.", ""]
    rows = []
    for label, prefix in (("Bundle's classifier (the generators' target)", "transfer/bundle_classifier"),
                          ("Held-out classifier", "transfer/held_out_classifier"),
                          ("Size-only model", "transfer/size_only")):
        rows.append((label, [f"{prefix}/auc", f"{prefix}/flipped_to_suspicious_by_g_pos",
                             f"{prefix}/flipped_to_not_suspicious_by_g_neg",
                             *(f"{prefix}/mean_probability/{name}" for name in ("x", "g_pos", "g_neg"))]))
    lines += _table(figures, ["Model", "AUC", "G+ flips", "G\u2212 flips", "mean p(x)", "mean p(G+)",
                              "mean p(G\u2212)"], rows)
    lines += ["", "Soft-tissue component at the centre, mean area (pixels):", ""]
    lines += _table(figures, ["Image", "Area"], [(name, [f"transfer/size_only/area_px/{key}"])
                                                 for key, name in (("x", "x"), *GENERATOR_COLUMNS)])
    return lines + [""]


def _similarity(result: Dict[str, Any]) -> List[str]:
    lines = ["## 5. SSIM(x, G(x)) where it matters", "", result["settings"]["similarity"] + ".", ""]
    header = ["Region", *(name for _, name in GENERATOR_COLUMNS), "Floor (unrelated patch)"]
    lines += _table(result["figures"], header, [
        (f"{label} ({name})", [f"{section}/{region}/{key}" for key in ("g_pos", "g_neg", "unrelated_patch")])
        for section, name in (("similarity", "project SSIM"), ("similarity_skimage", "scikit-image SSIM"))
        for label, region in (("Inside the valid box", "inside_box"), ("Within 5 mm of the mask, in the box",
                                                                      "within_5mm"))])
    return lines + [""]


def _relevance(result: Dict[str, Any]) -> List[str]:
    controls = result["settings"]["gaussian_controls"]
    described = "; ".join(f"{name}: {control['rule']} (sigma {control['sigma_mm']:.2f} mm)"
                          for name, control in controls.items())
    lines = ["## 6. Share of |R| within 5 mm of the mask, beside model-free controls", "",
             f"Controls: {described}; uniform: the region's share of the patch.", ""]
    rows = [("|R| = |G+(x) \u2212 G\u2212(x)|", ["relevance_within_5mm/relevance"])]
    for name in controls:
        rows += [(name, [f"relevance_within_5mm/{name}"]),
                 (f"|R| minus {name} (paired)", [f"relevance_within_5mm/relevance_minus_{name}"])]
    rows.append(("Uniform", ["relevance_within_5mm/uniform_control"]))
    lines += _table(result["figures"], ["Map", "Share within 5 mm"], rows)
    return lines + [""]


def _ablations(result: Dict[str, Any]) -> List[str]:
    lines = ["## 7. Ablations of G\u2212's change", "", result["settings"]["ablations"] + ".", ""]
    lines += _table(result["figures"], ["Change applied to x", "Flip rate"], [
        ("Full G\u2212(x)", ["ablations_g_neg/full_change"]),
        ("Darkening part only", ["ablations_g_neg/darkening_only"]),
        ("Brightening part only", ["ablations_g_neg/brightening_only"]),
        ("Inserted bright core only", ["ablations_g_neg/inserted_core_only"]),
    ])
    if result.get("command"):
        lines += ["", f"Command: `{result['command']}`"]
    return lines + [""]
