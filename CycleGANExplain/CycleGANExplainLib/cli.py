"""`cyclegan-explain`: explain nodules of a CT from the command line.

    cyclegan-explain explain CT.nrrd --seed=R,A,S [--seed=...] [--seeds-file FILE] [--seeds-from-dicom SR|SEG]
                             --out DIR [--half-extent-mm MM] [--device auto|cpu|cuda] [--method KEY]
                             [--bundle NAME|PATH] [--no-figures]
    cyclegan-explain bundles

The web viewer is its own command, `cyclegan-explain-web` (`cyclegan-explain web` still runs it).

For each seed it explains every axial slice through the nodule within ``--half-extent-mm`` of it
(``nodule_stack``) and writes the stacked relevance map (by default CycleGAN-AM's R = G+(x) - G-(x);
``--method`` picks a baseline attribution method instead) as one NRRD placed in the CT's patient space
(load it over the CT in Slicer: it lines up in all three views), a PNG figure (unless ``--no-figures``) and, for all seeds, summary.json and the case's table (case_summary.csv
and .md: one row per nodule, with its label from the seeds file); the
output folder is written whole or not at all (``output_folder``). ``bundles`` lists the shipped
model bundles with their training data and evaluation. Research use only.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import re
import sys
import time
import warnings
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from . import __version__
from .attribution_methods import DEFAULT_METHOD, METHODS, MissingDependencyError, install_command
from . import case_summary
from .caveats import explanation_caveats
from .dicom_results import DicomResultsError, read_source_series, require_highdicom, stack_result, write_dicom_results
from .explanation import require_method
from .inference_threads import prefer_passive_openmp
from .explanation_figure import ExplanationFigureWriter
from .formatting import probability_text
from .overlay import colour_legend, display_limit
from .model_bundle import (DEVICE_CHOICES, BundleError, bundle_digest, bundle_option_help, default_bundle_dir,
                           load_bundle, read_metadata, resolve_bundle, shipped_bundles)
from .output_folder import DICOM_SUBFOLDER, OutputFolderError, RunFolder, check_output_folder, recover_replacement
from .bundle_trust import ALLOW_FLAG, ALLOW_HELP, known_bundle_name
from .nodule_stack import (DEFAULT_HALF_EXTENT_MM, HalfExtentError, StackedExplanations, check_half_extent,
                           explain_through_nodules)
from .notices import RESEARCH_NOTICE, data_attribution_text
from .patch_sampling import InvalidVolumeError, SeedOutsideVolumeError, is_seed_inside
from .sample_data import sample_notice, sample_of_path
from .seed_files import (DicomReference, LabelledSeed, SeedFileError, check_unique_labels, dicom_reference,
                         read_dicom_seeds, read_seeds_file)
from .volume_checks import NotCTError, check_ct_volume
from .volume_io import DEFAULT_MAX_VOXELS, UnreadableVolumeError, dicom_series_files, read_volume, write_volume

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: the reader of stdout went away (`cyclegan-explain bundles | head`)
WEB_COMMAND = "cyclegan-explain-web"
# Seeds listed on stdout one per line; beyond this summary.json holds them.
MAX_SEEDS_PRINTED = 20
DEFAULT_MARKER = "(default)"


# A plain decimal number: Python's float() also takes "1_0" (10), "inf" and "nan", which are typos here.
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def parse_seed(text: str) -> List[float]:
    """'R,A,S' in millimetres to three floats (argparse type)."""
    parts = text.replace(" ", "").split(",")
    values = [float(part) for part in parts] if all(_NUMBER.fullmatch(part) for part in parts) else []
    if len(values) != 3 or not all(np.isfinite(values)):
        raise argparse.ArgumentTypeError(f"seed must be R,A,S in millimetres (three numbers), got {text!r}")
    return values


def positive_int(text: str) -> int:
    """A whole number of at least 1 (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


def half_extent(text: str) -> float:
    """--half-extent-mm: a distance from 0 to nodule_stack.MAX_HALF_EXTENT_MM (argparse type)."""
    if not _NUMBER.fullmatch(text.strip()):
        raise argparse.ArgumentTypeError(f"must be a distance in millimetres (a number), got {text!r}")
    try:
        return check_half_extent(float(text))
    except HalfExtentError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def method_help() -> str:
    """--method's help: every method with its label and library."""
    listed = "; ".join(
        f"{key}: {method.library if method.library.startswith(method.label) else f'{method.label} ({method.library})'}"
        for key, method in METHODS.items()
    )
    unsigned = ", ".join(method.label for method in METHODS.values() if not method.signed)
    return (f"how the relevance map is computed (default: {DEFAULT_METHOD}). {listed}. Baselines need "
            f"{install_command()}. Unsigned maps, shown in red only: {unsigned}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cyclegan-explain",
        description="Explain a lung-nodule malignancy classifier with CycleGAN activation maximisation. "
        + RESEARCH_NOTICE,
        epilog=data_attribution_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,  # keeps the citations one per line
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--verbose", action="store_true",
                        help="also show the package's log and third-party warnings (by default each event "
                             "is reported once, as a 'warning:' line)")
    commands = parser.add_subparsers(dest="command", required=True)
    explain_parser = commands.add_parser(
        "explain",
        help="explain one or more seed points of a CT volume",
        description="Cut a 64x64 axial patch (45 mm) around each seed, run the classifier and the generators "
        "G+ (towards malignant) and G- (towards benign), and write R = G+(x) - G-(x), or the map of the "
        "baseline attribution method named by --method. "
        "Write negative coordinates as --seed=-12.5,30,-100. " + RESEARCH_NOTICE,
    )
    explain_parser.add_argument("volume", type=Path, help="CT volume: NRRD, NIfTI, MHA file or a DICOM series folder")
    explain_parser.add_argument(
        "--seed", dest="seeds", type=parse_seed, action="append", default=[], metavar="R,A,S",
        help="nodule centre in RAS millimetres (Slicer's coordinates); repeat for several nodules",
    )
    explain_parser.add_argument(
        "--seeds-file", dest="seeds_files", type=Path, action="append", default=[], metavar="FILE",
        help="nodule centres from a file, after the --seed ones: CSV whose header names R,A,S or L,P,S (and "
        "optionally id, label or name), Slicer's markups .mrk.json, or JSON {\"coordinate_system\": \"LPS\", "
        "\"seeds\": [[L,P,S], {\"id\": \"N2\", \"position\": [L,P,S]}]}; labels name the rows of case_summary.csv")
    explain_parser.add_argument(
        "--seeds-from-dicom", dest="seeds_dicom", type=Path, action="append", default=[], metavar="SR|SEG",
        help="nodule centres from a DICOM SR (TID 1500 measurement report: each ROI group's points or region) or "
        "Segmentation (each segment's centroid), checked against the CT's frame of reference when the CT is a "
        "DICOM series; needs the dicom extra")
    explain_parser.add_argument(
        "--out", type=Path, required=True,
        help="output folder: created if missing; an earlier run's output there is replaced, other files are "
        "never touched (the run is refused)")
    explain_parser.add_argument(
        "--dicom", action="store_true",
        help=f"also write DICOM objects into --out's {DICOM_SUBFOLDER}/ folder, in the CT's study: per nodule a "
        "Parametric Map of the relevance, a Segmentation of its red and blue regions and a Comprehensive 3D SR "
        "with the probabilities, the seed, the bundle and the research-use notice. The CT must be a DICOM series "
        "folder; needs the dicom extra (highdicom)")
    explain_parser.add_argument("--no-figures", action="store_true",
                                help="write the overlays and summary.json only, no PNG figure per seed")
    explain_parser.add_argument(
        "--half-extent-mm", type=half_extent, default=DEFAULT_HALF_EXTENT_MM, metavar="MM",
        help="explain every axial slice within MM above and below each seed, one CT slice apart (at least the "
        f"patch's pixel spacing), and write them as one overlay per nodule (default {DEFAULT_HALF_EXTENT_MM:g}; "
        "0: the seed's slice only). Slices whose patch lies mostly outside the CT are left out, with a warning")
    explain_parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="default: CUDA if available")
    explain_parser.add_argument("--bundle", default=None, metavar="NAME|PATH", help=bundle_option_help())
    explain_parser.add_argument(ALLOW_FLAG, action="store_true", dest="allow_unknown_bundle",
                                help=ALLOW_HELP)
    explain_parser.add_argument("--max-voxels", type=int, default=DEFAULT_MAX_VOXELS, metavar="N",
                                help=f"refuse a volume whose header declares more voxels (default {DEFAULT_MAX_VOXELS:,})")
    explain_parser.add_argument("--series", default=None, help="SeriesInstanceUID when the DICOM folder holds several")
    explain_parser.add_argument("--batch-size", type=positive_int, default=32, help="patches per network pass")
    explain_parser.add_argument("--method", choices=list(METHODS), default=DEFAULT_METHOD, metavar="METHOD",
                                help=method_help().replace("%", "%%"))
    # Listed for --help only: main() hands `web ...` to the web viewer's own command before parsing.
    commands.add_parser("web", add_help=False, help=f"deprecated: use {WEB_COMMAND} (same arguments)")
    commands.add_parser(
        "bundles",
        help="list the shipped model bundles: training data and evaluation",
        description="Each shipped model bundle's name, version, training data and headline test-split "
        "evaluation, read from its metadata.json; the default is marked. " + RESEARCH_NOTICE,
    )
    return parser


def run_bundles() -> int:
    """Print each shipped bundle (from its metadata.json), then the data attribution."""
    default = default_bundle_dir()
    bundles = shipped_bundles()
    if not bundles:
        print("No model bundle is installed.", file=sys.stderr)
        return EXIT_BAD_INPUT
    for path in bundles:
        try:
            metadata = read_metadata(path)
            digest = bundle_digest(path)
        except BundleError as error:
            print(f"{path.name}: unreadable ({error})")
            continue
        marker = f" {DEFAULT_MARKER}" if path == default else ""
        print(f"{path.name}{marker}: {metadata.display_name}")
        print(f"  trained on: {metadata.trained_on}")
        print(f"  evaluation: {metadata.headline_evaluation}")
        known = "known: shipped with this package" if known_bundle_name(digest) else f"UNKNOWN, needs {ALLOW_FLAG}"
        print(f"  SHA256SUMS digest: {digest} ({known})")
    print(RESEARCH_NOTICE)
    print(data_attribution_text())
    return 0


def run_web(arguments: Sequence[str]) -> int:
    """The deprecated `cyclegan-explain web`: runs the web viewer's own command, found by its entry point
    (so that the core does not import a front end)."""
    print(f"note: 'cyclegan-explain web' is deprecated; use '{WEB_COMMAND}' with the same arguments.", file=sys.stderr)
    scripts = importlib.metadata.entry_points()
    scripts = scripts.select(group="console_scripts") if hasattr(scripts, "select") else scripts.get("console_scripts", [])
    for script in scripts:
        if script.name == WEB_COMMAND:
            return script.load()(list(arguments))
    print(f"error: {WEB_COMMAND} is not installed; install it with: pip install 'cyclegan-explain[web]'", file=sys.stderr)
    return EXIT_BAD_INPUT


class ProgressLine:
    """One line on stderr, rewritten in place: what is done, the rate and the time left."""

    def __init__(self, verb: str, unit: str = "seeds") -> None:
        self.verb = verb
        self.unit = unit
        self.started = time.perf_counter()
        self.last_shown = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if done < total and now - self.last_shown < 0.2:  # at most five updates a second
            return
        self.last_shown = now
        elapsed = now - self.started
        text = f"\r{self.verb} {done}/{total} {self.unit}"
        if done < total and done and elapsed > 1.0:
            rate = done / elapsed
            text += f" ({rate:.1f}/s, about {(total - done) / rate:.0f} s left)"
        print(text.ljust(60), end="\n" if done == total else "", file=sys.stderr, flush=True)


def _seed_entry(item, number: int, digits: int, method: str, units: str, label: Optional[str] = None) -> dict:
    stem = f"seed{number:0{digits}d}"
    limit = display_limit(item.relevance, method)
    return {
        "label": label,
        "seed_ras_mm": [round(float(v), 3) for v in item.seed_ras],
        "malignancy_probability": {"x": item.p_x, "G_neg(x)": item.p_neg, "G_pos(x)": item.p_pos},
        "relevance": {"min": float(item.relevance.min()), "max": float(item.relevance.max()),
                      "display_limit": limit, "units": units},
        "outside_fraction": item.outside_fraction,
        "caveats": [{"code": caveat.code, "text": caveat.text} for caveat in explanation_caveats(item, method)],
        "overlay": f"overlay_{stem}.nrrd",
        "figure": None,
    }


def _stack_entry(stack, method: str) -> dict:
    """summary.json's account of a seed's slices through the nodule: positions, probabilities, the stack's range."""
    entry = stack.summary()
    entry["relevance"] = {"min": float(stack.relevance.min()), "max": float(stack.relevance.max()),
                          "display_limit": display_limit(stack.relevance, method)}
    return entry


def _write_outputs(result: StackedExplanations, run: RunFolder, heading: str, bundle_summary: str,
                   notes: Sequence[str], figures: bool, labels: Sequence[Optional[str]],
                   dicom_source: Optional[list] = None) -> dict:
    """Each seed's overlay through the nodule (and figure of its slice), with summary.json rewritten as the
    seeds are written so that an interrupted run leaves a summary of what it finished; the case's table once
    all are written. A seed's fields outside "through_nodule" are its own slice's, as before stacks."""
    batch, stacks = result
    method = METHODS[batch.method]
    summary = {
        "notice": RESEARCH_NOTICE,
        "complete": False,
        "seeds_requested": len(stacks),
        "bundle": batch.bundle_name,
        "trained": batch.trained,
        "bundle_summary": bundle_summary,
        "method": {"key": batch.method, "label": batch.method_label, "signed": batch.signed},
        "device": batch.device,
        "seconds": batch.seconds,
        "volume_notes": list(notes),
        "warnings": batch.warnings,
        "colours": colour_legend(batch.method),
        "seeds": [],
        "files": [],  # the case's own files (output_folder lists them with the seeds' files)
    }
    rows = []
    figure_writer = ExplanationFigureWriter(batch.method, slice_plot=True) if figures else None
    progress = ProgressLine("wrote") if len(stacks) > 1 else None
    digits = max(2, len(str(len(stacks))))
    last_summary = time.perf_counter()
    try:
        for number, stack in enumerate(stacks, start=1):
            item = stack.centre
            entry = _seed_entry(item, number, digits, batch.method, method.units, labels[number - 1])
            entry["through_nodule"] = _stack_entry(stack, batch.method)
            write_volume(stack.relevance, stack.stack_to_ras, run.staging / entry["overlay"])
            if figure_writer is not None:
                entry["figure"] = entry["overlay"].replace("overlay_", "explanation_").replace(".nrrd", ".png")
                figure_writer.write(run.staging / entry["figure"], item, heading=f"{heading}, seed {number}",
                                    limit=entry["relevance"]["display_limit"], stack=stack)
            summary["seeds"].append(entry)
            rows.append(case_summary.case_row(number, entry["label"], item, batch.method,
                                              {kind: entry[kind] for kind in ("figure", "overlay") if entry[kind]}))
            if time.perf_counter() - last_summary > 1.0:  # not after every seed: a thousand rewrites add up
                run.write_summary(summary)
                last_summary = time.perf_counter()
            if progress is not None:
                progress(number, len(stacks))
        if dicom_source is not None:  # one call: each kind of object is one series for all nodules
            results = [stack_result(stack, batch.method) for stack in stacks]
            written = write_dicom_results(results, dicom_source, run.staging / DICOM_SUBFOLDER, batch.method,
                                          batch.bundle_name)
            for entry, paths in zip(summary["seeds"], written):
                entry["dicom"] = [f"{DICOM_SUBFOLDER}/{path.name}" for path in paths]
    except BaseException:  # Ctrl-C or a write error: the summary lists what was finished
        run.write_summary(summary)
        raise
    case_summary.write_csv(run.staging / case_summary.CSV_FILE, rows)
    case_summary.write_markdown(run.staging / case_summary.MARKDOWN_FILE, rows,
                                f"{heading}: {batch.method_label}, {len(rows)} nodule(s)")
    summary["files"] = [case_summary.CSV_FILE, case_summary.MARKDOWN_FILE]
    summary["complete"] = True
    run.write_summary(summary)
    return summary


def _interrupted_summary(seeds: int, notes: Sequence[str]) -> dict:
    """summary.json of a run stopped before any seed was finished (while the networks ran)."""
    return {"notice": RESEARCH_NOTICE, "complete": False, "seeds_requested": seeds,
            "interrupted": "while the networks ran, before any seed was finished", "volume_notes": list(notes),
            "seeds": []}


def _given_seeds(args: argparse.Namespace) -> "tuple[List[LabelledSeed], List[str]]":
    """The --seed seeds, then each --seeds-file's (read before the volume: a bad file costs nothing), and notes."""
    seeds = [LabelledSeed(tuple(seed), None, f"--seed {number}") for number, seed in enumerate(args.seeds, start=1)]
    notes: List[str] = []
    for path in args.seeds_files:
        found = read_seeds_file(path)
        seeds += found.seeds
        notes += found.notes
    if not seeds and not args.seeds_dicom:
        raise SeedFileError("No nodule to explain: give --seed R,A,S, --seeds-file FILE or --seeds-from-dicom SR|SEG.")
    return seeds, notes


def _dicom_seeds(args: argparse.Namespace) -> "tuple[List[LabelledSeed], List[str]]":
    """Each --seeds-from-dicom's seeds, checked against the CT series' frame of reference where the CT is one."""
    if not args.seeds_dicom:
        return [], []
    reference: Optional[DicomReference] = None
    if args.volume.is_dir():  # read_volume has accepted the folder and its series by now
        reference = dicom_reference(dicom_series_files(args.volume, args.series))
    seeds: List[LabelledSeed] = []
    notes: List[str] = []
    for path in args.seeds_dicom:
        found = read_dicom_seeds(path, reference)
        seeds += found.seeds
        notes += found.notes
    return seeds, notes


def _outside_text(number: int, seed: LabelledSeed) -> str:
    if seed.origin.startswith("--seed"):
        return str(number)
    return f"{number} ({seed.label + ', ' if seed.label else ''}{seed.origin})"


def _dicom_source(args: argparse.Namespace, loaded) -> list:
    """The CT series' headers that --dicom's objects reference, read before any work; a CT that is not a
    DICOM series is refused: objects with an invented patient and study would file as another patient's."""
    if not loaded.source_files:
        raise DicomResultsError(
            f"--dicom needs the CT as a DICOM series folder: {args.volume.name} is a {loaded.description}, which has no "
            "patient, study or frame of reference for DICOM objects to belong to. Without --dicom the relevance is "
            "written as NRRD (overlay_seedNN.nrrd) in the CT's patient space, which 3D Slicer loads over the CT.")
    return read_source_series(loaded.source_files)


def run_explain(args: argparse.Namespace) -> int:
    require_method(args.method)  # a missing package is reported before the volume is read
    if args.dicom:
        require_highdicom()
    seeds, seed_notes = _given_seeds(args)
    for done in recover_replacement(args.out):  # a run killed while replacing --out
        print(f"note: {done}", file=sys.stderr)
    # before any work: a bad --out costs nothing; it may hold none of the inputs
    check_output_folder(args.out, [args.volume, *args.seeds_files, *args.seeds_dicom])
    loaded = read_volume(args.volume, args.series, max_voxels=args.max_voxels)
    check_ct_volume(loaded.volume_kji, loaded.ijk_to_ras)
    dicom_source = _dicom_source(args, loaded) if args.dicom else None
    from_dicom, dicom_notes = _dicom_seeds(args)
    seeds += from_dicom
    check_unique_labels(seeds)
    outside = [
        _outside_text(number, seed) for number, seed in enumerate(seeds, start=1)
        if not is_seed_inside(loaded.volume_kji, loaded.ijk_to_ras, seed.ras)
    ]
    if outside:
        raise SeedOutsideVolumeError(
            "Seed(s) {} lie outside the volume (RAS extent of its voxel corners: {})".format(
                ", ".join(outside), _ras_extent_text(loaded.volume_kji.shape, loaded.ijk_to_ras)
            )
        )
    points = [seed.ras for seed in seeds]
    print(f"Read {loaded.description}: {loaded.volume_kji.shape[::-1]} voxels (I, J, K).", file=sys.stderr)
    for note in (*loaded.notes, *seed_notes, *dicom_notes):
        print(f"note: {note}", file=sys.stderr)
    run = RunFolder(args.out)  # before the networks run, so that Ctrl-C leaves it as the README says
    try:
        bundle = load_bundle(resolve_bundle(args.bundle), args.device, allow_unknown=args.allow_unknown_bundle)
        result = explain_through_nodules(
            loaded.volume_kji, loaded.ijk_to_ras, points, bundle, args.half_extent_mm, batch_size=args.batch_size,
            progress=ProgressLine("explained", "patches") if len(points) > 1 else None, method=args.method)
        batch = result.batch
    except KeyboardInterrupt:
        run.write_summary(_interrupted_summary(len(points), loaded.notes))
        print(f"\nInterrupted while the networks ran, before any seed was finished; {run.staging} holds a "
              "summary.json that says so.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BaseException:
        run.discard()
        raise
    for warning in batch.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    try:
        summary = _write_outputs(result, run, f"{batch.bundle_name} ({'trained' if batch.trained else 'UNTRAINED'})",
                                 bundle.metadata.summary, loaded.notes, figures=not args.no_figures,
                                 labels=[seed.label for seed in seeds], dicom_source=dicom_source)
    except KeyboardInterrupt:
        print(f"\nInterrupted; what was finished is in {run.staging} (its summary.json lists it).", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as error:  # a full disk, a folder removed under the run
        raise OutputFolderError(f"Could not write the output ({error.strerror or error}); what was finished is in "
                                f"{run.staging}.") from error
    try:
        replaced = run.commit()
    except OSError as error:  # the earlier output, if any, is back in place (RunFolder.commit)
        raise OutputFolderError(f"Could not put the output at {args.out} ({error.strerror or error}); the finished "
                                f"run is in {run.staging}.") from error
    print(f"{RESEARCH_NOTICE} Bundle: {batch.bundle_name}{'' if batch.trained else ' (UNTRAINED: random weights)'}; "
          f"method {batch.method_label}; device {batch.device}; {batch.seconds * 1000:.0f} ms for {len(result.stacks)} seed(s), "
          f"{len(batch)} slice(s) through the nodules.")
    print(f"Colours: {colour_legend(batch.method)}.")
    sample = sample_of_path(args.volume)
    if sample is not None and sample_notice(sample):  # the real sample's licence asks for attribution where it is used
        print(f"Data: {sample_notice(sample)}")
    shown = summary["seeds"] if len(summary["seeds"]) <= MAX_SEEDS_PRINTED else summary["seeds"][:MAX_SEEDS_PRINTED]
    for number, seed in enumerate(shown, start=1):
        p = seed["malignancy_probability"]
        files = ", ".join(name for name in (seed["figure"], seed["overlay"]) if name)
        label = f" ({seed['label']})" if seed["label"] else ""
        print(f"seed {number}{label} {seed['seed_ras_mm']}: p(malignant) x={probability_text(p['x'])} "
              f"G-(x)={probability_text(p['G_neg(x)'])} G+(x)={probability_text(p['G_pos(x)'])} -> {files}")
        for caveat in seed["caveats"]:
            print(f"  caveat: {caveat['text']}")
    if len(shown) < len(summary["seeds"]):
        unshown = summary["seeds"][len(shown):]
        with_caveats = sum(1 for seed in unshown if seed["caveats"])
        print(f"... and {len(unshown)} more seeds, {with_caveats} of them with caveats (summary.json lists every one).")
    print(f"Case summary, one row per nodule: {args.out / case_summary.CSV_FILE} ({case_summary.MARKDOWN_FILE} beside it)")
    if args.dicom:
        print(f"DICOM, in the CT's study (per nodule a parametric map, a segmentation and an SR): "
              f"{args.out / DICOM_SUBFOLDER}")
    print(f"About the bundle: {bundle.metadata.summary}")
    print(f"Wrote {args.out / 'summary.json'}{' (replacing the earlier run there)' if replaced else ''}")
    return 0


def _ras_extent_text(shape_kji: Sequence[int], ijk_to_ras: np.ndarray) -> str:
    corners = np.array([[i, j, k, 1.0] for i in (-0.5, shape_kji[2] - 0.5)
                        for j in (-0.5, shape_kji[1] - 0.5) for k in (-0.5, shape_kji[0] - 0.5)])
    ras = corners @ np.asarray(ijk_to_ras).T
    low, high = ras[:, :3].min(axis=0), ras[:, :3].max(axis=0)
    return ", ".join(f"{axis} {lo:.1f}..{hi:.1f}" for axis, lo, hi in zip("RAS", low, high))


def main(argv: Optional[Sequence[str]] = None) -> int:
    prefer_passive_openmp()  # before anything imports torch
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["web"]:  # before parsing: argparse would take the viewer's options for its own
        return run_web(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    if args.verbose:
        warnings.simplefilter("default")  # before the package's filters of known third-party warnings
    else:
        # The command prints every warning of a result itself; the package's log would say it twice.
        logging.getLogger(__package__).setLevel(logging.ERROR)
    try:
        code = run_bundles() if args.command == "bundles" else run_explain(args)
        sys.stdout.flush()  # here, where a closed pipe can still be handled
        return code
    except (UnreadableVolumeError, InvalidVolumeError, NotCTError, SeedOutsideVolumeError, BundleError,
            MissingDependencyError, OutputFolderError, SeedFileError, DicomResultsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:  # before the output folder existed (run_explain handles it after)
        print("\nInterrupted; nothing was written.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # Python would report the pipe again when it flushes stdout at exit; send the rest nowhere.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
