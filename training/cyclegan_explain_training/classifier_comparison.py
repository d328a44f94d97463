"""Is a retrained classifier more than size? Candidates beside the bundle's classifier (issue 21, item 3).

``compare-classifiers`` scores classifier checkpoints (train-classifier's) on the centre views of
their validation patients, where the choice between them is made, and, only when asked with
``--test``, on the test split for the final report. For each candidate and each fill of the
surround: diameter-matched pair concordance and AUC beside diameter alone and the mask's area
(size_matched.size_matched_figures, patient-bootstrap intervals), and the paired difference
from the reference classifier (the bundle's, imported with import-classifier). The candidates
must share the reference's validation patients, so that no candidate was trained on patients the
others were chosen on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Union

import numpy as np
import torch
from CycleGANExplainLib.patch_sampling import PATCH_EXTENT_MM, PATCH_SIZE_PX

from .batched_inference import malignancy_probabilities
from .context_fill import EVALUATION_FILLS, PIXEL_MM
from .dataset import CENTRE, PreparedDataset
from .reporting import estimate_text, json_safe, markdown_table
from .size_confound import selection_score
from .size_matched import size_matched_figures
from .train_classifier import fit_and_held_out, images_in_context, load_classifier, validation_split_seed

REFERENCE_NAME = "reference"
JSON_FILE = "classifier_comparison.json"
MARKDOWN_FILE = "classifier_comparison.md"


def _validation_patients(checkpoint: Mapping[str, Any], name: str) -> List[str]:
    patients = checkpoint.get("validation_patients")
    if not patients:
        raise ValueError(f"Classifier {name!r} does not record its validation patients (retrain it with "
                         "train-classifier, or import it with import-classifier).")
    return sorted(patients)


def compare_classifiers(dataset: PreparedDataset, checkpoints: Mapping[str, Union[str, Path]], resamples: int,
                        seed: int, include_test: bool, device: str = "cpu") -> Dict[str, Any]:
    """Figures of every checkpoint (``checkpoints``: name -> classifier.pt, REFERENCE_NAME among
    them) on the validation patients and, with ``include_test``, the test split."""
    if REFERENCE_NAME not in checkpoints:
        raise ValueError(f"The classifiers must include the {REFERENCE_NAME!r} one, the differences' reference.")
    dataset.require_patch_contract(PATCH_SIZE_PX, PATCH_EXTENT_MM, "compare-classifiers")
    states = {name: torch.load(Path(path), map_location="cpu", weights_only=False) for name, path in checkpoints.items()}
    patients = {name: _validation_patients(state, name) for name, state in states.items()}
    differing = [name for name in states if patients[name] != patients[REFERENCE_NAME]]
    if differing:
        raise ValueError(f"Classifier(s) {differing} were validated on other patients than the reference: their "
                         "validation figures are not comparable (train them with validation_seed 0).")
    reference = states[REFERENCE_NAME]["config"]["classifier"]
    _, validation = fit_and_held_out(dataset, float(reference["validation_fraction"]),
                                      validation_split_seed(reference))
    splits = {"validation": validation}
    if include_test:
        splits["test"] = dataset.subset("test", CENTRE)
    classifiers = {name: load_classifier(state) for name, state in states.items()}
    hu_window = states[REFERENCE_NAME]["hu_window"]
    result: Dict[str, Any] = {"resamples": resamples, "seed": seed, "checkpoints": {
        name: {"path": str(path), "loss_weighting": states[name].get("loss_weighting", "inverse class frequency"),
               "auxiliary_ratings": states[name]["config"]["classifier"].get("auxiliary_ratings", []),
               "selection": states[name].get("validation_selection"), "epoch": states[name].get("epoch")}
        for name, path in checkpoints.items()}}
    for split, data in splits.items():
        result[split] = {}
        for fill in EVALUATION_FILLS:
            images = images_in_context(data, hu_window, fill)
            p = {name: malignancy_probabilities(model, images, device).numpy() for name, model in classifiers.items()}
            area = data.masks.reshape(len(data), -1).sum(axis=1) * PIXEL_MM**2
            result[split][fill] = {
                name: size_matched_figures(data.labels, data.diameters_mm, data.patient_ids,
                                           {"classifier": p[name], "diameter": data.diameters_mm, "mask_area": area,
                                            **({} if name == REFERENCE_NAME else {REFERENCE_NAME: p[REFERENCE_NAME]})},
                                           resamples, seed)
                for name in classifiers}
    result["validation_choice"] = validation_choice(result["validation"])
    return result


def validation_choice(validation: Mapping[str, Mapping[str, Any]]) -> Dict[str, Any]:
    """The classifier that train-classifier's ``matched_pairs`` rule would keep: the best worst-fill mean
    of matched-pair concordance and AUC on the validation patients (point estimates), with every score."""
    scores = {}
    for name in next(iter(validation.values())):
        per_fill = [selection_score(by_name[name]["concordance"]["classifier"]["value"],
                                   by_name[name]["auc"]["classifier"]["value"]) for by_name in validation.values()]
        scores[name] = float(min(per_fill))
    return {"rule": "best worst-fill mean of matched-pair concordance and AUC (validation patients)",
            "chosen": max(scores, key=scores.get), "scores": scores}


def comparison_markdown(result: Mapping[str, Any]) -> str:
    """The figures as tables, one per split and fill."""
    lines = ["# Classifiers against the size confound", "",
             "Diameter-matched pairs: a nodule rated suspicious and one not, diameters within 1 mm. "
             f"Patient-bootstrap 95 % intervals ({result['resamples']} resamples). Choices are made on "
             "validation patients only; the test split is reported, never chosen on.", ""]
    for name, described in result["checkpoints"].items():
        lines.append(f"- **{name}**: `{described['path']}`; loss weights {described['loss_weighting']}; "
                     f"reader-rating head: {', '.join(described['auxiliary_ratings']) or 'none'}; kept epoch "
                     f"{described['epoch']} by {described['selection']}")
    choice = result["validation_choice"]
    lines += ["", f"Chosen on validation ({choice['rule']}): **{choice['chosen']}**. Scores: "
              + ", ".join(f"{name} {score:.3f}" for name, score in sorted(choice["scores"].items(),
                                                                        key=lambda item: -item[1])) + "."]
    for split in ("validation", "test"):
        for fill, by_name in result.get(split, {}).items():
            lines += ["", f"## {split}, centre views, {fill} fill", ""]
            rows = []
            for name, figures in by_name.items():
                rows.append([name, estimate_text(figures["concordance"]["classifier"]),
                             estimate_text(figures["auc"]["classifier"]),
                             estimate_text(figures["classifier_minus"]["auc"]["diameter"]),
                             estimate_text(figures["classifier_minus"]["concordance"].get(REFERENCE_NAME)),
                             str(figures["pairs"])])
            some = next(iter(by_name.values()))
            rows.append(["diameter alone", estimate_text(some["concordance"]["diameter"]),
                         estimate_text(some["auc"]["diameter"]), "", "", str(some["pairs"])])
            rows.append(["mask area", estimate_text(some["concordance"]["mask_area"]),
                         estimate_text(some["auc"]["mask_area"]), "", "", str(some["pairs"])])
            lines += markdown_table(["classifier", "matched-pair concordance", "AUC", "AUC minus diameter's",
                                     "concordance minus reference's", "pairs"], rows)
    return "\n".join(lines) + "\n"


def write_comparison(result: Mapping[str, Any], out_dir: Union[str, Path]) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / JSON_FILE).write_text(json.dumps(json_safe(result), indent=2) + "\n")
    markdown = out_dir / MARKDOWN_FILE
    markdown.write_text(comparison_markdown(result))
    return markdown
