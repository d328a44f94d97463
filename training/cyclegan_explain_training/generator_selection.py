"""Choose which generators to export, across runs and their validation checks, with honest uncertainty.

During training each run keeps the pair with the best validation score (generator_validation);
that is one number per check, and a gap between two checks or two seeds may be noise: the review
of the first lidc-voi bundle found the shipped seed ahead by 0.013 where the score's
patient-bootstrap SD was 0.024. Here every saved check of every run is re-scored on the same
validation patients, all on the same patient-bootstrap resamples, so that the difference between
the chosen pair and every other is a paired interval. The pair with the best point score is chosen;
the report says which others it cannot be told apart from (interval of the difference includes 0).

All runs must have been validated against the same classifier (hence the same validation
patients, drawn from the training split): the test split is never read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from CycleGANExplainLib.model_bundle import sha256_of

from .checkpoint import load_checkpoint
from .dataset import PreparedDataset
from .metrics import patient_bootstrap

SELECTION_JSON = "selection.json"
SELECTION_MARKDOWN = "selection.md"


@dataclass
class Candidate:
    run: Path  # the run's cyclegan.pt, or a bundle's folder
    check: Optional[Path]  # validation-checks/step-XXXXXX.pt; None for a bundle's generators
    step: int
    training_score: float  # the score recorded during training (NaN for a bundle)


def candidates_of(cyclegan_path: Path, top: Optional[int] = None) -> List[Candidate]:
    """The run's saved validation checks, the ``top`` best by their recorded score when given."""
    from .train_cyclegan import VALIDATION_CHECKS_DIR

    checks = sorted((Path(cyclegan_path).parent / VALIDATION_CHECKS_DIR).glob("step-*.pt"))
    if not checks:
        raise FileNotFoundError(f"{cyclegan_path.parent / VALIDATION_CHECKS_DIR} holds no validation checks "
                                "(step-*.pt); runs trained before they were saved cannot be compared here.")
    found = []
    for path in checks:
        state = load_checkpoint(path, "generator-check")
        found.append(Candidate(Path(cyclegan_path), path, int(state["step"]), float(state["validation"]["score"])))
    found.sort(key=lambda candidate: -candidate.training_score)
    return found[:top] if top else found


def bundle_generators(bundle_dir: Path, classifier: nn.Module, allow_unknown: bool) -> Tuple[nn.Module, nn.Module]:
    """An exported bundle's G+ and G- as trainable modules, so that they are scored exactly as a run's
    checks are (BatchNorm recomputed on the same patches). Refused unless the bundle's classifier is
    ``classifier`` (same weights): the validation patients are that classifier's."""
    from CycleGANExplainLib.model_bundle import load_bundle

    from .export import generators_of_bundle

    bundle = load_bundle(bundle_dir, "cpu", allow_unknown=allow_unknown)
    ours, theirs = classifier.state_dict(), bundle.classifier.state_dict()
    if set(ours) != set(theirs) or not all(torch.equal(ours[key].cpu(), theirs[key].cpu()) for key in ours):
        raise ValueError(f"The classifier of {bundle_dir} is not the one the runs were validated against; its "
                         "generators cannot be compared on those validation patients.")
    return generators_of_bundle(bundle)


def _same_classifier(states: Sequence[Dict[str, Any]], paths: Sequence[Path]) -> None:
    digests = {state["classifier_sha256"] for state in states}
    if len(digests) > 1:
        raise ValueError("The runs were validated against different classifiers, so on different validation "
                         f"patients, and cannot be compared pairwise: {', '.join(str(p) for p in paths)}.")


def _judges(paths: Sequence[Path], classifier_state: Dict[str, Any], states: Sequence[Dict[str, Any]]
            ) -> List[Dict[str, Any]]:
    """The judge classifiers' checkpoints, refused unless each held out the runs' validation patients
    (as an L_AM twin must) and no run maximised it: transfer is measured on networks never optimised for."""
    from .train_cyclegan import same_patient_classifiers

    maximised = {state["classifier_sha256"] for state in states}
    maximised |= {twin["sha256"] for state in states for twin in state.get("activation_twins", [])}
    for path in paths:
        if sha256_of(path) in maximised:
            raise ValueError(f"{path} is a classifier the runs maximised (L_AM); a judge of transfer must be one "
                             "they never saw.")
    return list(same_patient_classifiers(classifier_state, paths).values())


def select_generators(cyclegan_paths: Sequence[Union[str, Path]], dataset: PreparedDataset, out_dir: Union[str, Path],
                      top: Optional[int] = None, resamples: int = 1000, seed: int = 0, device: str = "cpu",
                      command: Optional[str] = None, bundles: Sequence[Union[str, Path]] = (),
                      allow_unknown_bundle: bool = False,
                      judge_classifiers: Sequence[Union[str, Path]] = ()) -> Dict[str, Any]:
    """Re-score every candidate check of the runs, choose the best, write selection.json and .md.

    ``bundles``: exported bundles with the same classifier (e.g. the one shipped now), scored
    beside the checks so that replacing it is decided on the validation patients too.
    ``judge_classifiers``: classifiers on the same validation patients that no run maximised; their
    mean flip rate joins the score (generator_validation), so transfer takes part in the choice."""
    from .generator_validation import figures_of, per_nodule_figures, validation_set
    from .train_classifier import load_classifier
    from .train_cyclegan import load_generators, split_like_classifier, validation_batchnorm_images

    paths = [Path(path) for path in cyclegan_paths]
    states = [load_checkpoint(path, "cyclegan") for path in paths]
    _same_classifier(states, paths)
    classifier_path = Path(states[0]["classifier_checkpoint"])
    if sha256_of(classifier_path) != states[0]["classifier_sha256"]:
        raise ValueError(f"{classifier_path} is no longer the classifier the runs were validated against (its "
                         "SHA-256 changed); restore it to compare the runs on their validation patients.")
    classifier_state = load_checkpoint(classifier_path, "classifier")
    classifier = load_classifier(classifier_state).to(device).eval()
    hu_window = classifier_state["hu_window"]
    judge_paths = [Path(path) for path in judge_classifiers]
    judges = [load_classifier(state).to(device).eval() for state in _judges(judge_paths, classifier_state, states)]
    fit, validation = split_like_classifier(dataset, classifier_state)
    data = validation_set(validation, hu_window)
    batchnorm_images = validation_batchnorm_images(fit, hu_window)

    batch_size = states[0]["config"]["cyclegan"]["batch_size"]
    candidates = [candidate for path in paths for candidate in candidates_of(path, top)]
    per_nodule = []
    for candidate, state in ((c, states[paths.index(c.run)]) for c in candidates):
        generator_pos, generator_neg = load_generators(state, check=load_checkpoint(candidate.check, "generator-check"))
        per_nodule.append(per_nodule_figures(generator_pos, generator_neg, classifier, data, batchnorm_images,
                                             batch_size, device, judges))
    for bundle_dir in map(Path, bundles):
        generator_pos, generator_neg = bundle_generators(bundle_dir, classifier, allow_unknown_bundle)
        candidates.append(Candidate(bundle_dir, None, -1, float("nan")))
        per_nodule.append(per_nodule_figures(generator_pos, generator_neg, classifier, data, batchnorm_images,
                                             batch_size, device, judges))
    points = [figures_of(figures, np.arange(len(data.labels))) for figures in per_nodule]
    chosen = int(np.argmax([point["score"] for point in points]))

    def statistics(indices: np.ndarray) -> Dict[str, float]:
        scores = [figures_of(figures, indices)["score"] for figures in per_nodule]
        return {**{f"score/{i}": s for i, s in enumerate(scores)},
                **{f"lead/{i}": scores[chosen] - s for i, s in enumerate(scores)}}

    estimates = patient_bootstrap(statistics, data.patient_ids, resamples, seed)
    rows = []
    for index, (candidate, point) in enumerate(zip(candidates, points)):
        lead = estimates[f"lead/{index}"]
        rows.append({"run": str(candidate.run), "check": str(candidate.check) if candidate.check else None,
                     "bundle": candidate.check is None, "step": candidate.step,
                     "training_score": None if np.isnan(candidate.training_score) else candidate.training_score,
                     "score": estimates[f"score/{index}"].as_dict(),
                     "chosen_minus_this": lead.as_dict(),
                     # the chosen pair is ahead beyond noise only when the whole interval is above 0
                     "distinguishable": bool(index != chosen and lead.low > 0),
                     "figures": point})
    result = {"chosen": rows[chosen], "candidates": rows, "validation_nodules": int(len(data.labels)),
              "validation_patients": int(len(np.unique(data.patient_ids))), "resamples": resamples, "seed": seed,
              "rule": "the highest validation score (generator_validation's definition"
                      + (", with the judges' mean flip rate" if judges else "") + ") on all validation patients; "
                      "intervals are 95 % patient-bootstrap percentiles, every candidate on the same resamples",
              "judge_classifiers": [{"path": str(path), "sha256": sha256_of(path)} for path in judge_paths],
              "command": command}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / SELECTION_JSON).write_text(json.dumps(result, indent=2) + "\n")
    (out / SELECTION_MARKDOWN).write_text(selection_markdown(result))
    return result


def selection_markdown(result: Dict[str, Any]) -> str:
    """The selection as a table, best first, with each candidate's paired gap to the chosen one."""
    def interval(estimate: Dict[str, float]) -> str:
        return f"{estimate['value']:.3f} [{estimate['ci_low']:.3f}, {estimate['ci_high']:.3f}]"

    chosen = result["chosen"]
    lines = [
        "# Generator selection on validation patients",
        "",
        f"{result['validation_nodules']} nodules of {result['validation_patients']} validation patients; "
        f"{result['resamples']} patient-bootstrap resamples (seed {result['seed']}). Rule: {result['rule']}.",
        "",
        (f"Chosen: the generators of bundle `{chosen['run']}`" if chosen["bundle"] else
         f"Chosen: `{chosen['check']}` (step {chosen['step']})") + f", score {interval(chosen['score'])}.",
        "",
        "| run | step | score [95 % CI] | chosen − this [95 % CI] | told apart | flips +/− (worst fill) |"
        + (" judges' flips +/− (worst fill) |" if result.get("judge_classifiers") else ""),
        "|---|---|---|---|---|---|" + ("---|" if result.get("judge_classifiers") else ""),
    ]
    for row in sorted(result["candidates"], key=lambda row: -row["score"]["value"]):
        figures = row["figures"]
        fill = min((key.split("/")[0] for key in figures if key.endswith("/score")),
                   key=lambda name: figures[f"{name}/score"])
        told = "chosen" if _same_candidate(row, chosen) else ("yes" if row["distinguishable"] else "no")
        name, step = (f"bundle {Path(row['run']).name}", "exported") if row["bundle"] else (Path(row["run"]).parent.name, row["step"])
        lines.append(f"| {name} | {step} | {interval(row['score'])} | "
                     f"{interval(row['chosen_minus_this'])} | {told} | "
                     f"{figures[f'{fill}/flip_benign_to_malignant']:.2f} / {figures[f'{fill}/flip_malignant_to_benign']:.2f} |"
                     + (f" {figures[f'{fill}/judge_flip_benign_to_malignant']:.2f} / "
                        f"{figures[f'{fill}/judge_flip_malignant_to_benign']:.2f} |" if result.get("judge_classifiers") else ""))
    undistinguished = sum(1 for row in result["candidates"] if not _same_candidate(row, chosen) and not row["distinguishable"])
    lines += ["", f"{undistinguished} other candidate(s) cannot be told apart from the chosen one on these patients "
              "(their gap's interval includes 0): the choice among them is not evidence that one is better.", ""]
    if result.get("judge_classifiers"):
        lines += ["Judges (classifiers on the same patients that no run maximised): "
                  + ", ".join(f"`{judge['path']}`" for judge in result["judge_classifiers"]), ""]
    if result.get("command"):
        lines += [f"Command: `{result['command']}`", ""]
    return "\n".join(lines)


def _same_candidate(row: Dict[str, Any], other: Dict[str, Any]) -> bool:
    return (row["run"], row["check"]) == (other["run"], other["check"])
