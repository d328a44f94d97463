"""``cyclegan-explain-train``: prepare data, train both stages, export the bundle, evaluate it.

    cyclegan-explain-train prepare --out data/lidc
    cyclegan-explain-train train-classifier --dataset data/lidc --out runs/classifier
    cyclegan-explain-train train-cyclegan --dataset data/lidc --classifier runs/classifier/classifier.pt --out runs/gan
    cyclegan-explain-train export --dataset data/lidc --classifier runs/classifier/classifier.pt \\
        --cyclegan runs/gan/cyclegan.pt --out CycleGANExplain/CycleGANExplainLib/resources/models/lidc-cyclegan-am
    cyclegan-explain-train select-generators --cyclegan runs/gan*/cyclegan.pt --dataset data/lidc --out runs/selection
    cyclegan-explain-train evaluate --bundle <bundle> --dataset data/lidc --out runs/evaluation
    cyclegan-explain-train audit --bundle <bundle> --dataset data/lidc --out runs/evaluation \\
        [--held-out-classifier runs/resnet/classifier.pt]
    cyclegan-explain-train compare-methods --bundle <bundle> --dataset data/lidc --out training/results

Settings come from the paper's defaults, then ``--config FILE.json``, then the flags.
prepare and evaluate are imported only when their subcommand runs.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from CycleGANExplainLib.attribution_methods import MissingDependencyError
from CycleGANExplainLib.bundle_trust import ALLOW_FLAG, ALLOW_HELP
from CycleGANExplainLib.model_bundle import DEVICE_CHOICES, BundleError

from .checkpoint import load_checkpoint, save_checkpoint
from .config import load_config, with_overrides
from .dataset import load_prepared

PROGRAM = "cyclegan-explain-train"


def _add_training_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, type=Path, help="prepared dataset folder (from prepare)")
    parser.add_argument("--out", required=True, type=Path, help="run folder for the checkpoint and metrics log")
    parser.add_argument("--config", type=Path, help="JSON config (training/configs/paper.json, tiny.json)")
    parser.add_argument("--device", default="auto", help=f"one of {', '.join(DEVICE_CHOICES)} or cuda:N")
    parser.add_argument("--width", type=int, help="first stage's kernel count (later stages double it)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    _add_prepare(commands)
    _add_training_commands(commands)
    _add_export(commands)
    _add_select_generators(commands)
    _add_evaluate(commands)
    _add_audit(commands)
    _add_compare_classifiers(commands)
    _add_compare_methods(commands)
    return parser


def _add_prepare(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    prepare = commands.add_parser("prepare", help="cut nodule patches into a prepared dataset")
    prepare.add_argument("--out", required=True, type=Path)
    prepare.add_argument("--source", choices=("phantoms", "dicom", "voi"), default="phantoms",
                         help="phantoms from the readers' contours, real DICOM through pylidc, or real nodule "
                              "sub-volumes (voi, with --voi-dir)")
    prepare.add_argument("--voi-dir", type=Path,
                         help="folder of nodule sub-volumes laid out like lidc-voi (split.csv, data/VOIs, metadata CSV)")
    prepare.add_argument("--exclude-patients-of", type=Path,
                         help="a split.csv whose test patients are left out (phantom pre-training for a real model)")
    prepare.add_argument("--size-normalised", action="store_true")
    prepare.add_argument("--max-slice-thickness", type=float, help="mm; thicker series are left out")
    prepare.add_argument("--split-seed", type=int, default=0)
    prepare.add_argument("--limit", type=int, help="at most this many nodules (for quick runs)")
    prepare.add_argument("--cache-dir", type=Path)
    prepare.add_argument("--quiet", action="store_true")


def _add_training_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    classifier = commands.add_parser("train-classifier", help="train the malignancy classifier")
    _add_training_flags(classifier)
    classifier.add_argument("--epochs", type=int, help="maximum epochs (early stopping may end sooner)")
    classifier.add_argument("--ratings-from", type=Path, metavar="VOI_DIR",
                            help="folder laid out like lidc-voi whose metadata CSV holds the readers' ratings "
                                 "(for classifier.auxiliary_ratings)")

    cyclegan = commands.add_parser("train-cyclegan", help="train G+, G- and their discriminators")
    _add_training_flags(cyclegan)
    cyclegan.add_argument("--classifier", required=True, type=Path, help="classifier.pt from train-classifier")
    cyclegan.add_argument("--steps", type=int, help="total training steps (batches)")
    cyclegan.add_argument("--checkpoint-every", type=int)
    cyclegan.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
    cyclegan.add_argument("--stop-at-step", type=int, help="checkpoint and stop here (for time-limited jobs)")
    cyclegan.add_argument("--also-maximise-for", action="append", type=Path, default=[], metavar="CLASSIFIER_PT",
                          help="a twin classifier.pt (same validation patients) whose output L_AM also maximises; "
                               "repeatable")
    cyclegan.add_argument("--warm-start", type=Path, metavar="RUN/cyclegan.pt|BUNDLE",
                          help="start a new run from another run's networks and optimisers (same classifier, data "
                               "and network sizes), or from a bundle's generators (its classifier imported as "
                               "--classifier); recorded in the checkpoint and the bundle's metadata")
    cyclegan.add_argument("--allow-unknown-bundle", action="store_true",
                          help="warm-start from a bundle the package does not ship (only one whose source you trust: "
                               "it runs code)")

    imported = commands.add_parser(
        "import-classifier",
        help="a bundle's classifier as a classifier.pt, to train new generators against the classifier it ships")
    imported.add_argument("--bundle", required=True, type=Path)
    imported.add_argument("--dataset", required=True, type=Path, help="the prepared dataset the bundle was trained on")
    imported.add_argument("--out", required=True, type=Path, help="folder for classifier.pt")
    imported.add_argument("--allow-unknown-bundle", action="store_true",
                          help="load a bundle the package does not ship (only one whose source you trust: it runs code)")

    randomise = commands.add_parser(
        "randomise-classifier",
        help="a classifier checkpoint with freshly initialised weights (sanity check for the generators)")
    randomise.add_argument("--classifier", required=True, type=Path, help="classifier.pt to copy all but the weights from")
    randomise.add_argument("--out", required=True, type=Path, help="folder for the randomised classifier.pt")
    randomise.add_argument("--seed", type=int, default=0)


def _add_export(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    export = commands.add_parser("export", help="write the model bundle from both checkpoints")
    export.add_argument("--dataset", required=True, type=Path)
    export.add_argument("--classifier", required=True, type=Path)
    export.add_argument("--cyclegan", required=True, type=Path)
    export.add_argument("--out", required=True, type=Path, help="bundle folder")
    export.add_argument("--name", default="lidc-cyclegan-am")
    export.add_argument("--version", default="1.0.0")
    export.add_argument("--overwrite", action="store_true")
    export.add_argument("--generators", type=Path, metavar="CHECK.pt",
                        help="export this validation check of the --cyclegan run (select-generators' choice) "
                             "instead of the pair the run kept as best")
    export.add_argument("--change-deadband-hu", type=float, metavar="HU",
                        help="drop the generators' changes smaller than this (soft threshold) instead of the run's "
                             "own setting (cyclegan.change_deadband_hu); recorded in the bundle's metadata")

    gain = commands.add_parser(
        "export-with-gain",
        help="copy a bundle with its residual generators' change multiplied by a gain (evaluate the copy again)")
    gain.add_argument("--bundle", required=True, type=Path)
    gain.add_argument("--change-gain", required=True, type=float, metavar="GAIN",
                      help="multiply each change G(x) - x by this (> 0) before clipping; recorded in the metadata")
    gain.add_argument("--out", required=True, type=Path, help="bundle folder for the copy")
    gain.add_argument("--version", required=True)
    gain.add_argument("--overwrite", action="store_true")
    gain.add_argument("--allow-unknown-bundle", action="store_true",
                      help="load a bundle the package does not ship (only one whose source you trust: it runs code)")


def _add_select_generators(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    select = commands.add_parser(
        "select-generators",
        help="re-score every validation check of one or more runs on the validation patients, with paired "
             "patient-bootstrap intervals, and choose the pair to export")
    select.add_argument("--cyclegan", required=True, type=Path, nargs="+", metavar="RUN/cyclegan.pt",
                        help="runs validated against the same classifier")
    select.add_argument("--dataset", required=True, type=Path)
    select.add_argument("--out", required=True, type=Path, help="folder for selection.json and selection.md")
    select.add_argument("--top", type=int, help="only each run's TOP checks by the score recorded in training")
    select.add_argument("--bootstrap", type=int, default=1000)
    select.add_argument("--seed", type=int, default=0)
    select.add_argument("--device", default="cpu")
    select.add_argument("--bundle", type=Path, action="append", default=[], metavar="PATH",
                        help="an exported bundle with the same classifier (e.g. the shipped one), scored beside the "
                             "checks (repeatable)")
    select.add_argument("--judge-classifier", type=Path, action="append", default=[], metavar="CLASSIFIER_PT",
                        help="a classifier.pt on the same validation patients that no run maximised; its flip rate "
                             "(transfer) joins the score (repeatable: the judges' mean)")
    select.add_argument(ALLOW_FLAG, action="store_true", dest="allow_unknown_bundle", help=ALLOW_HELP)


def _add_evaluate(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    evaluate = commands.add_parser("evaluate", help="evaluate a bundle on the test split")
    evaluate.add_argument("--bundle", required=True, type=Path)
    evaluate.add_argument("--dataset", required=True, type=Path)
    evaluate.add_argument("--out", required=True, type=Path)
    evaluate.add_argument("--bootstrap", type=int, default=1000)
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--attach", action="store_true",
                          help="record the headline figures in the bundle's metadata.json and re-sign SHA256SUMS")
    evaluate.add_argument("--voi-dir", type=Path, metavar="DIR",
                          help="the nodule sub-volume folder the dataset was prepared from (prepare --voi-dir): the "
                               "seed-shifted views are re-cut from it in every draw; without it only the lung "
                               "texture is redrawn")
    evaluate.add_argument("--draws", type=int, default=10,
                          help="times the random conditions (seed shift direction, lung texture) are redrawn for "
                               "the classifier's spread (default 10, at least 2)")
    evaluate.add_argument("--extra-bundle", action="append", type=Path, default=[], metavar="PATH",
                          help="a bundle with the same classifier.pt and generators from another training seed; its "
                               "generator figures are reported beside the bundle's (repeatable)")
    evaluate.add_argument(ALLOW_FLAG, action="store_true", dest="allow_unknown_bundle",
                          help=ALLOW_HELP + " (every bundle you export is unknown until it is shipped)")


def _add_audit(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    audit = commands.add_parser(
        "audit", help="counterfactual audit on the test split: realism, bright cores, change beyond the box, "
                      "transfer, SSIM near the nodule, |R| beside a Gaussian control, ablations")
    audit.add_argument("--bundle", required=True, type=Path)
    audit.add_argument("--dataset", required=True, type=Path)
    audit.add_argument("--out", required=True, type=Path, help="folder for audit.json and audit.md")
    audit.add_argument("--held-out-classifier", type=Path, metavar="CLASSIFIER_PT",
                       help="classifier.pt from train-classifier that the generators never saw (another "
                            "architecture): transfer flips and its test AUC")
    audit.add_argument("--validation-of", type=Path, metavar="CLASSIFIER_PT",
                       help="audit on this classifier's validation patients instead of the test split (fitted on "
                            "its fitting patients), for choosing between bundles without reading the test split")
    audit.add_argument("--bootstrap", type=int, default=1000)
    audit.add_argument("--seed", type=int, default=0)
    audit.add_argument("--device", default="auto")
    audit.add_argument("--detector-epochs", type=int, default=15,
                       help="epochs of the CNN realism detector (default 15; bundles compare only at the same value)")
    audit.add_argument(ALLOW_FLAG, action="store_true", dest="allow_unknown_bundle",
                       help=ALLOW_HELP + " (every bundle you export is unknown until it is shipped)")


def _add_compare_classifiers(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    compare = commands.add_parser(
        "compare-classifiers", help="classifiers beside size alone: diameter-matched pair concordance and AUC on "
                                    "validation patients (and the test split with --test)")
    compare.add_argument("--dataset", required=True, type=Path)
    compare.add_argument("--reference", required=True, type=Path, metavar="CLASSIFIER_PT",
                         help="the classifier the candidates are compared with (e.g. the bundle's, import-classifier)")
    compare.add_argument("--candidate", action="append", default=[], metavar="NAME=CLASSIFIER_PT", required=True,
                         help="a classifier.pt to compare, named; repeatable")
    compare.add_argument("--test", action="store_true",
                         help="also the test split (final report only: choose on the validation figures)")
    compare.add_argument("--out", required=True, type=Path, help="folder for classifier_comparison.md and .json")
    compare.add_argument("--bootstrap", type=int, default=1000)
    compare.add_argument("--seed", type=int, default=0)


def _candidates(given: Sequence[str]) -> Dict[str, Path]:
    candidates: Dict[str, Path] = {}
    for item in given:
        name, separator, path = item.partition("=")
        if not separator or not name or not path:
            raise ValueError(f"--candidate {item!r} is not NAME=CLASSIFIER_PT.")
        if name in candidates or name == "reference":
            raise ValueError(f"--candidate name {name!r} is used twice (or is 'reference').")
        candidates[name] = Path(path)
    for path in candidates.values():
        if not path.is_file():
            raise FileNotFoundError(f"classifier checkpoint not found: {path}")
    return candidates


def _add_compare_methods(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    from .method_comparison import DEFAULT_FILL, EVALUATION_FILLS  # here: this block's only module-level needs

    compare = commands.add_parser(
        "compare-methods", help="CycleGAN-AM beside the attribution baselines on the test split")
    compare.add_argument("--bundle", required=True, type=Path)
    compare.add_argument("--dataset", required=True, type=Path, help="prepared dataset with nodule masks")
    compare.add_argument("--out", required=True, type=Path, help="folder for baselines.md, .json and .png")
    compare.add_argument("--limit", type=int, help="compare this many test patches, drawn at random (seeded)")
    compare.add_argument("--methods", nargs="+", help="method keys (default: all; cyclegan-am is always needed)")
    compare.add_argument("--sanity-bundle", type=Path,
                         help="bundle whose generators were trained against a randomised classifier")
    compare.add_argument(ALLOW_FLAG, action="store_true", dest="allow_unknown_bundle",
                         help=ALLOW_HELP + " (every bundle you export is unknown until it is shipped)")
    compare.add_argument("--bootstrap", type=int, default=1000)
    compare.add_argument("--seed", type=int, default=0)
    compare.add_argument("--device", default="cpu", help="where the maps are computed and timed (default cpu)")
    compare.add_argument("--fill", choices=EVALUATION_FILLS, default=DEFAULT_FILL,
                         help="surround put beyond each nodule's sub-volume (default lung: the closest to a real CT)")


def _test_patients(split_csv: Optional[Path]) -> Optional[list]:
    if split_csv is None:
        return None
    from .lidc_voi import SPLIT_CSV, read_split

    if split_csv.name != SPLIT_CSV.name:
        raise ValueError(f"--exclude-patients-of expects a file named split.csv, got {split_csv}.")
    split = read_split(split_csv.parent)
    return sorted(patient for patient, name in split.items() if name == "test")


def _config(args: argparse.Namespace, section: str, extra: Dict[str, Any]):
    overrides = {"width": args.width, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
                 "seed": args.seed, **extra}
    return with_overrides(load_config(args.config), section, overrides)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    command = " ".join([PROGRAM, *(shlex.quote(arg) for arg in argv)])
    try:
        _run(args, command)
    except (FileNotFoundError, FileExistsError, ValueError, BundleError, MissingDependencyError) as error:
        print(f"{PROGRAM} {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


def _run(args: argparse.Namespace, command: str) -> None:

    if args.command == "prepare":
        from .prepare import prepare

        folder = prepare(args.out, source=args.source, size_normalised=args.size_normalised,
                         max_slice_thickness=args.max_slice_thickness, split_seed=args.split_seed,
                         limit=args.limit, cache_dir=args.cache_dir, progress=not args.quiet,
                         voi_dir=args.voi_dir, exclude_patients=_test_patients(args.exclude_patients_of))
        print(f"Prepared dataset: {folder}")
    elif args.command == "train-classifier":
        from .train_classifier import train_classifier

        config = _config(args, "classifier", {"max_epochs": args.epochs})
        train_classifier(load_prepared(args.dataset), config, args.out, args.device, not args.quiet, command,
                         ratings_from=args.ratings_from)
    elif args.command == "train-cyclegan":
        from .train_cyclegan import train_cyclegan

        config = _config(args, "cyclegan", {"steps": args.steps, "checkpoint_every": args.checkpoint_every})
        path = train_cyclegan(load_prepared(args.dataset), args.classifier, config, args.out, args.device,
                              resume=args.resume, stop_at_step=args.stop_at_step, progress=not args.quiet,
                              command=command, also_maximised_for=args.also_maximise_for,
                              warm_start=args.warm_start, allow_unknown_bundle=args.allow_unknown_bundle)
        print(f"CycleGAN-AM checkpoint: {path}")
    elif args.command == "import-classifier":
        from .export import classifier_checkpoint_from_bundle
        from .train_classifier import CLASSIFIER_CHECKPOINT

        state = classifier_checkpoint_from_bundle(args.bundle, args.dataset, command, args.allow_unknown_bundle)
        path = save_checkpoint(state, args.out / CLASSIFIER_CHECKPOINT)
        print(f"Classifier of {args.bundle}: {path}")
    elif args.command == "randomise-classifier":
        from .train_classifier import CLASSIFIER_CHECKPOINT, randomised_classifier_checkpoint

        randomised = randomised_classifier_checkpoint(load_checkpoint(args.classifier, "classifier"), args.seed, command)
        path = save_checkpoint(randomised, args.out / CLASSIFIER_CHECKPOINT)
        print(f"Randomised classifier: {path}")
    elif args.command == "export":
        from .export import export_from_checkpoints

        folder = export_from_checkpoints(args.classifier, args.cyclegan, args.dataset, args.out, args.name,
                                         args.version, args.overwrite, command, generators_path=args.generators,
                                         change_deadband_hu=args.change_deadband_hu)
        print(f"Bundle: {folder}")
        print(_shipping_note(folder))
    elif args.command == "export-with-gain":
        from .export import bundle_with_change_gain

        folder = bundle_with_change_gain(args.bundle, args.out, args.version, args.change_gain, command,
                                         args.overwrite, args.allow_unknown_bundle)
        print(f"Bundle: {folder} (not evaluated: run evaluate --attach)")
        print(_shipping_note(folder))
    elif args.command == "select-generators":
        from .generator_selection import SELECTION_MARKDOWN, select_generators

        if args.top is not None and args.top < 1 or args.bootstrap < 1:
            raise ValueError("--top and --bootstrap must be at least 1.")
        result = select_generators(args.cyclegan, load_prepared(args.dataset), args.out, top=args.top,
                                   resamples=args.bootstrap, seed=args.seed, device=args.device, command=command,
                                   bundles=args.bundle, allow_unknown_bundle=args.allow_unknown_bundle,
                                   judge_classifiers=args.judge_classifier)
        chosen = result["chosen"]
        what = f"the bundle {chosen['run']}" if chosen["bundle"] else f"step {chosen['step']} of {chosen['run']}"
        print(f"Chose {what}: score {chosen['score']['value']:.3f} "
              f"[{chosen['score']['ci_low']:.3f}, {chosen['score']['ci_high']:.3f}]; see {args.out / SELECTION_MARKDOWN}")
        if not chosen["bundle"]:
            print(f"Export it with: {PROGRAM} export --cyclegan {chosen['run']} --generators {chosen['check']} ...")
    elif args.command == "evaluate":
        from .evaluate import evaluate

        result = evaluate(args.bundle, args.dataset, args.out, bootstrap=args.bootstrap, seed=args.seed,
                          device=args.device, extra_bundles=args.extra_bundle,
                          allow_unknown_bundle=args.allow_unknown_bundle, voi_dir=args.voi_dir, draws=args.draws)
        print(f"Evaluation written to {args.out}")
        if args.attach:
            from .export import attach_evaluation

            attach_evaluation(args.bundle, result, report=str(args.out / "evaluation.md"))
            print(f"Evaluation figures recorded in {args.bundle / 'metadata.json'}")
            print(_shipping_note(args.bundle))
    elif args.command == "audit":
        from .counterfactual_audit import MARKDOWN_FILE as AUDIT_MARKDOWN, audit

        audit(args.bundle, args.dataset, args.out, held_out_classifier=args.held_out_classifier,
              bootstrap=args.bootstrap, seed=args.seed, device=args.device, detector_epochs=args.detector_epochs,
              allow_unknown_bundle=args.allow_unknown_bundle, command=command, validation_of=args.validation_of)
        print(f"Counterfactual audit written to {args.out / AUDIT_MARKDOWN}")
    elif args.command == "compare-classifiers":
        from .classifier_comparison import REFERENCE_NAME, compare_classifiers, write_comparison

        if not args.reference.is_file():
            raise FileNotFoundError(f"classifier checkpoint not found: {args.reference}")
        checkpoints = {REFERENCE_NAME: args.reference, **_candidates(args.candidate)}
        result = compare_classifiers(load_prepared(args.dataset), checkpoints, args.bootstrap, args.seed, args.test)
        print(f"Classifier comparison written to {write_comparison(result, args.out)}")
    elif args.command == "compare-methods":
        from .comparison_report import MARKDOWN_FILE, write_report
        from .method_comparison import compare_methods

        comparison = compare_methods(args.bundle, args.dataset, methods=args.methods, limit=args.limit,
                                     sanity_bundle_dir=args.sanity_bundle, seed=args.seed, device=args.device,
                                     fill=args.fill, allow_unknown_bundle=args.allow_unknown_bundle)
        write_report(comparison, args.out, resamples=args.bootstrap, seed=args.seed, command=command)
        print(f"Method comparison written to {args.out / MARKDOWN_FILE}")


def _shipping_note(bundle_dir: Path) -> str:
    """What to add to the package's known digests for the front ends to run this bundle unasked."""
    from CycleGANExplainLib.model_bundle import bundle_digest, read_metadata

    metadata = read_metadata(bundle_dir)
    return (f"To ship it, add \"{metadata.name} {metadata.version}\": \"{bundle_digest(bundle_dir)}\" to "
            "KNOWN_BUNDLE_DIGESTS in CycleGANExplainLib/bundle_trust.py (any later change to the bundle changes it).")


if __name__ == "__main__":
    sys.exit(main())
