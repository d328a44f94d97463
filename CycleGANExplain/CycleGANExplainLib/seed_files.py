"""Seeds of many nodules from a file: CSV, JSON (Slicer's markups or a plain list), a DICOM SR or SEG.

One reader for the command line (``--seeds-file``, ``--seeds-from-dicom``) and the Slicer module (a
seeds file loaded as a point list). Every seed comes back in RAS millimetres (Slicer's coordinates,
contract 1) with its label, if the file gives one, and where it was read ("seeds.csv line 4"), so
that an error or a seed outside the CT names the line. Every file states its coordinate system:

- CSV: a header row naming the columns R,A,S (RAS) or L,P,S (LPS), in any order and case, and
  optionally one label column (id, label or name).
- JSON: Slicer's markups file (``.mrk.json``: each point list's ``coordinateSystem``, its
  ``controlPoints[].position`` and ``label``; unplaced points are skipped), or
  ``{"coordinate_system": "LPS", "seeds": [[L, P, S], {"id": "N2", "position": [L, P, S]}]}``.
- DICOM SR (TID 1500 measurement report, read with highdicom.sr): one seed per planar or volumetric
  ROI measurement group, the centre of its SCOORD3D coordinates (patient LPS) or of its image-region
  SCOORD coordinates (pixels of a CT image, placed with that image's geometry); labelled by its
  tracking identifier.
- DICOM Segmentation (highdicom.seg): one seed per segment, the centroid of its voxels in patient
  coordinates; labelled by the segment label.

The frame of reference of an SR's or SEG's coordinates is compared with the CT's where the CT is a
DICOM series (``DicomReference``); it cannot be checked for another CT file, and the notes say so.
Anything unreadable raises SeedFileError naming the file and the line or entry.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

RAS, LPS = "RAS", "LPS"
COORDINATE_SYSTEMS = (RAS, LPS)
LABEL_COLUMNS = ("id", "label", "name")
# A plain decimal number: Python's float() also takes "1_0" (10), "inf" and "nan", which are typos here.
NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
SEGMENTATION_STORAGE = ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7")  # binary/fractional, label map
SR_STORAGE = ("1.2.840.10008.5.1.4.1.1.88.22", "1.2.840.10008.5.1.4.1.1.88.33",  # Enhanced, Comprehensive SR
              "1.2.840.10008.5.1.4.1.1.88.34")  # Comprehensive 3D SR: the IODs highdicom.sr reads
DICOM_EXTRA = "pip install 'cyclegan-explain[dicom]'"


class SeedFileError(ValueError):
    """A seeds file that cannot be used (the message names the file and the line or entry)."""


@dataclass(frozen=True)
class LabelledSeed:
    ras: Tuple[float, float, float]
    """The seed in RAS millimetres."""
    label: Optional[str]
    """The file's name for the nodule (None: the file gives none)."""
    origin: str
    """Where it was read, for messages: "seeds.csv line 4", "report.dcm, measurement group 2"."""


class SeedList(NamedTuple):
    seeds: List[LabelledSeed]
    notes: List[str]
    """What the reader skipped or could not check, for the user."""


class DicomReference(NamedTuple):
    """What an SR or SEG is checked against: the CT series' frame of reference and each image's geometry
    (SOPInstanceUID -> (ImagePositionPatient, ImageOrientationPatient, PixelSpacing))."""

    frame_of_reference_uid: Optional[str]
    images: Dict[str, Tuple[np.ndarray, np.ndarray, np.ndarray]]


def lps_to_ras(point: Sequence[float]) -> Tuple[float, float, float]:
    return (0.0 - float(point[0]), 0.0 - float(point[1]), float(point[2]))  # 0.0 - x: no "-0.0" in the tables


def _number(text: str, where: str) -> float:
    text = text.strip()
    if not NUMBER.fullmatch(text):
        kind = "not a finite number" if text.lower().lstrip("+-") in ("nan", "inf", "infinity") else "not a number"
        raise SeedFileError(f"{where}: {text!r} is {kind}.")
    return float(text)


def _point(values: Any, where: str, system: str) -> Tuple[float, float, float]:
    """Three finite JSON numbers in ``system`` to RAS."""
    if not isinstance(values, list) or len(values) != 3 or \
            not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise SeedFileError(f"{where}: a position must be three numbers, got {json.dumps(values)[:80]}.")
    if not all(math.isfinite(v) for v in values):
        raise SeedFileError(f"{where}: the position {values} is not finite.")
    return lps_to_ras(values) if system == LPS else tuple(float(v) for v in values)


def _system(value: Any, where: str) -> str:
    if not isinstance(value, str) or value.strip().upper() not in COORDINATE_SYSTEMS:
        raise SeedFileError(f"{where}: the coordinate system must be RAS or LPS, got {json.dumps(value)}.")
    return value.strip().upper()


def _label(value: Any) -> Optional[str]:
    text = "" if value is None else str(value).strip()
    return text or None


def read_csv_seeds(path: Path) -> SeedList:
    """A CSV file whose header names R,A,S or L,P,S (and optionally id, label or name)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:  # -sig: a spreadsheet's byte-order mark
            rows = [(number, row) for number, row in enumerate(csv.reader(handle), start=1)
                    if any(cell.strip() for cell in row)]
    except UnicodeDecodeError as error:
        raise SeedFileError(f"{path} is not a UTF-8 text file ({error.reason} at byte {error.start}).") from None
    except csv.Error as error:
        raise SeedFileError(f"{path}: not a readable CSV file ({error}).") from None
    if not rows:
        raise SeedFileError(f"{path} is empty: expected a header naming R,A,S or L,P,S, then one seed a line.")
    header_line, header = rows[0]
    names = [cell.strip() for cell in header]
    if all(NUMBER.fullmatch(name) for name in names):
        raise SeedFileError(f"{path} line {header_line}: no header row; the first line must name the columns "
                            "R,A,S (RAS) or L,P,S (LPS), e.g. 'id,R,A,S'.")
    columns = {name.upper(): index for index, name in enumerate(names)}
    repeated = sorted({name for name in (n.upper() for n in names) if [n.upper() for n in names].count(name) > 1})
    if repeated:
        raise SeedFileError(f"{path} line {header_line}: the column(s) {', '.join(repeated)} appear more than once.")
    # S is in both systems: R or A names RAS, L or P names LPS.
    found = {system: [axis for axis in system[:2] if axis in columns] for system in COORDINATE_SYSTEMS}
    if all(found[system] for system in COORDINATE_SYSTEMS):
        raise SeedFileError(f"{path} line {header_line}: columns of both systems "
                            f"({', '.join(found[RAS] + found[LPS])}); give R,A,S (RAS) or L,P,S (LPS), not both.")
    system = next((s for s in COORDINATE_SYSTEMS if found[s]), None)
    missing = [axis for axis in system if axis not in columns] if system else []
    if system is None or missing:
        shown = f"missing {', '.join(missing)}; " if missing else ""
        raise SeedFileError(f"{path} line {header_line}: {shown}the header must name the columns R,A,S (RAS) or "
                            f"L,P,S (LPS); found {', '.join(names)}.")
    label_columns = [index for index, name in enumerate(names) if name.lower() in LABEL_COLUMNS]
    if len(label_columns) > 1:
        raise SeedFileError(f"{path} line {header_line}: more than one label column "
                            f"({', '.join(names[i] for i in label_columns)}); keep one of id, label, name.")
    seeds = []
    for number, row in rows[1:]:
        where = f"{path} line {number}"
        if len(row) != len(names):
            raise SeedFileError(f"{where}: {len(row)} values for the header's {len(names)} columns.")
        point = [_number(row[columns[axis]], f"{where}, column {names[columns[axis]]}") for axis in system]
        seeds.append(LabelledSeed(lps_to_ras(point) if system == LPS else tuple(point),
                                  _label(row[label_columns[0]]) if label_columns else None, where))
    if not seeds:
        raise SeedFileError(f"{path} holds a header but no seed.")
    return SeedList(seeds, [])


def _markups_seeds(path: Path, document: dict) -> SeedList:
    markups = document["markups"]
    if not isinstance(markups, list) or not markups:
        raise SeedFileError(f"{path}: 'markups' must be a non-empty list of point lists.")
    seeds, skipped = [], 0
    for m, markup in enumerate(markups):
        where = f"{path} markups[{m}]"
        if not isinstance(markup, dict):
            raise SeedFileError(f"{where}: not an object.")
        if markup.get("type", "Fiducial") != "Fiducial":
            raise SeedFileError(f"{where}: a {markup.get('type')} markup; seeds come from point lists (Fiducial).")
        if "coordinateSystem" not in markup:
            raise SeedFileError(f"{where}: no coordinateSystem (RAS or LPS) is stated.")
        system = _system(markup["coordinateSystem"], where)
        if markup.get("coordinateUnits", "mm") != "mm":
            raise SeedFileError(f"{where}: coordinateUnits {markup['coordinateUnits']!r}; only mm is supported.")
        points = markup.get("controlPoints", [])
        if not isinstance(points, list):
            raise SeedFileError(f"{where}: controlPoints must be a list.")
        for p, point in enumerate(points):
            here = f"{where}.controlPoints[{p}]"
            if not isinstance(point, dict) or "position" not in point:
                raise SeedFileError(f"{here}: a control point needs a position.")
            if point.get("positionStatus", "defined") != "defined":  # a point not yet placed in Slicer
                skipped += 1
                continue
            seeds.append(LabelledSeed(_point(point["position"], here, system), _label(point.get("label")), here))
    if not seeds:
        raise SeedFileError(f"{path}: no placed control point.")
    return SeedList(seeds, [f"{path}: {skipped} control point(s) not placed, skipped."] if skipped else [])


def _plain_seeds(path: Path, document: dict) -> SeedList:
    if "coordinate_system" not in document:
        raise SeedFileError(f"{path}: no coordinate_system (RAS or LPS) is stated.")
    system = _system(document["coordinate_system"], str(path))
    entries = document["seeds"]
    if not isinstance(entries, list) or not entries:
        raise SeedFileError(f"{path}: 'seeds' must be a non-empty list.")
    seeds = []
    for index, entry in enumerate(entries):
        where = f"{path} seeds[{index}]"
        if isinstance(entry, dict):
            if "position" not in entry:
                raise SeedFileError(f"{where}: an entry needs a position.")
            labels = [entry[key] for key in LABEL_COLUMNS if key in entry]
            if len(labels) > 1:
                raise SeedFileError(f"{where}: more than one of id, label, name.")
            seeds.append(LabelledSeed(_point(entry["position"], where, system), _label(labels[0] if labels else None),
                                      where))
        else:
            seeds.append(LabelledSeed(_point(entry, where, system), None, where))
    return SeedList(seeds, [])


def read_json_seeds(path: Path) -> SeedList:
    """Slicer's markups JSON or the plain {"coordinate_system", "seeds"} form."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as error:
        raise SeedFileError(f"{path} is not a UTF-8 text file ({error.reason} at byte {error.start}).") from None
    except json.JSONDecodeError as error:
        raise SeedFileError(f"{path} is not valid JSON (line {error.lineno} column {error.colno}: {error.msg}).") \
            from None
    except RecursionError:
        raise SeedFileError(f"{path} is not valid JSON (nested too deeply).") from None
    if isinstance(document, dict) and "markups" in document:
        return _markups_seeds(Path(path), document)
    if isinstance(document, dict) and "seeds" in document:
        return _plain_seeds(Path(path), document)
    raise SeedFileError(f"{path}: neither a Slicer markups file ('markups') nor a seeds list "
                        "({\"coordinate_system\": \"LPS\", \"seeds\": [...]}).")


def read_seeds_file(path: Union[str, Path]) -> SeedList:
    """A CSV (.csv, .txt) or JSON (.json, .mrk.json) seeds file, by its suffix."""
    path = Path(path)
    if not path.is_file():
        raise SeedFileError(f"Seeds file {path}: {'is a folder' if path.is_dir() else 'no such file'}.")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".txt"):
        return read_csv_seeds(path)
    if suffix == ".json":
        return read_json_seeds(path)
    raise SeedFileError(f"Seeds file {path}: unknown type {suffix or '(no suffix)'}; use .csv or .json "
                        "(a DICOM SR or SEG goes to --seeds-from-dicom).")


# --- DICOM --------------------------------------------------------------------------------------


def dicom_reference(files: Iterable[Union[str, Path]]) -> DicomReference:
    """The frame of reference and image geometry of a CT series' files (headers only)."""
    import pydicom

    frames, images = set(), {}
    tags = ["SOPInstanceUID", "FrameOfReferenceUID", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"]
    for name in files:
        dataset = pydicom.dcmread(str(name), stop_before_pixels=True, specific_tags=tags)
        if "FrameOfReferenceUID" in dataset:
            frames.add(str(dataset.FrameOfReferenceUID))
        if all(tag in dataset for tag in tags[2:]):
            images[str(dataset.SOPInstanceUID)] = (np.array(dataset.ImagePositionPatient, dtype=float),
                                                   np.array(dataset.ImageOrientationPatient, dtype=float),
                                                   np.array(dataset.PixelSpacing, dtype=float))
    return DicomReference(frames.pop() if len(frames) == 1 else None, images)


def _check_frame(path: Path, where: str, frame: Optional[str], reference: Optional[DicomReference]) -> None:
    if reference is not None and reference.frame_of_reference_uid and frame and \
            frame != reference.frame_of_reference_uid:
        raise SeedFileError(f"{path}{where}: its coordinates are in frame of reference {frame}, not the CT's "
                            f"({reference.frame_of_reference_uid}); it belongs to another scan or registration.")


def _graphic_centre(points: np.ndarray, graphic_type: str) -> np.ndarray:
    """The centre a seed goes to: a circle's first point is its centre; a closed polygon repeats its first."""
    if graphic_type == "CIRCLE":
        return points[0]
    if graphic_type == "POLYGON" and len(points) > 1 and np.allclose(points[0], points[-1]):
        points = points[:-1]
    return points.mean(axis=0)


def _content_items(item: Any) -> Iterable[Any]:
    for child in getattr(item, "ContentSequence", []):
        yield child
        yield from _content_items(child)


def _group_centre(path: Path, where: str, group: Any, reference: Optional[DicomReference]) -> np.ndarray:
    """The LPS centre of a measurement group's SCOORD3D items, else of its image-region SCOORD items."""
    items = list(_content_items(group[0]))
    scoord3d = [item for item in items if item.get("ValueType") == "SCOORD3D"]
    if scoord3d:
        centres = []
        for item in scoord3d:
            _check_frame(path, where, str(item.get("ReferencedFrameOfReferenceUID", "")) or None, reference)
            centres.append(_graphic_centre(np.array(item.GraphicData, dtype=float).reshape(-1, 3), item.GraphicType))
        return np.mean(centres, axis=0)
    scoord = [item for item in items if item.get("ValueType") == "SCOORD"]
    if not scoord:
        raise SeedFileError(f"{path}{where}: no spatial coordinates (SCOORD3D or image region); a group that "
                            "only references a segmentation needs that SEG (--seeds-from-dicom SEG).")
    centres = []
    for item in scoord:
        images = [child for child in getattr(item, "ContentSequence", []) if child.get("ValueType") == "IMAGE"]
        uid = str(images[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID) if images else None
        if reference is None:
            raise SeedFileError(f"{path}{where}: its region is drawn on a CT image (pixel coordinates); give the CT "
                                "as its DICOM series folder so that the image's position is known.")
        if uid not in reference.images:
            raise SeedFileError(f"{path}{where}: its region is drawn on image {uid}, which is not in the CT series.")
        position, orientation, spacing = reference.images[uid]
        column_row = _graphic_centre(np.array(item.GraphicData, dtype=float).reshape(-1, 2), item.GraphicType)
        # SCOORD's (0, 0) is the top left pixel's corner: its centre is (0.5, 0.5).
        centres.append(position + orientation[:3] * spacing[1] * (column_row[0] - 0.5)
                       + orientation[3:] * spacing[0] * (column_row[1] - 0.5))
    return np.mean(centres, axis=0)


def _sr_seeds(path: Path, reference: Optional[DicomReference]) -> SeedList:
    import highdicom

    try:
        report = highdicom.sr.srread(path).content
    except Exception as error:  # noqa: BLE001 - highdicom raises many kinds on a malformed SR
        raise SeedFileError(f"{path}: an SR highdicom cannot read ({type(error).__name__}: {error}).") from None
    if not isinstance(report, highdicom.sr.MeasurementReport):
        raise SeedFileError(f"{path}: an SR that is not a TID 1500 measurement report.")
    groups = report.get_planar_roi_measurement_groups() + report.get_volumetric_roi_measurement_groups()
    if not groups:
        raise SeedFileError(f"{path}: the measurement report holds no planar or volumetric ROI measurement group.")
    seeds = []
    for number, group in enumerate(groups, start=1):
        where = f", measurement group {number}"
        lps = _group_centre(path, where, group, reference)
        seeds.append(LabelledSeed(lps_to_ras(lps), _label(group.tracking_identifier), f"{path}{where}"))
    return SeedList(seeds, [])


def _functional(dataset: Any, frame: int, sequence: str, attribute: str) -> np.ndarray:
    """A frame's functional group attribute, per frame or shared."""
    for groups, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        items = dataset.get(groups) or []
        group = items[index] if len(items) > index else None
        if group is not None and sequence in group and attribute in group[sequence][0]:
            return np.array(group[sequence][0][attribute].value, dtype=float)
    raise SeedFileError(f"frame {frame + 1} has no {attribute}")


def _seg_seeds(path: Path, reference: Optional[DicomReference]) -> SeedList:
    import highdicom

    try:
        seg = highdicom.seg.segread(path)
        pixels = np.asarray(seg.pixel_array, dtype=float).reshape(int(seg.get("NumberOfFrames", 1)), seg.Rows,
                                                                   seg.Columns)
    except Exception as error:  # noqa: BLE001 - highdicom and pydicom raise many kinds on a malformed SEG
        raise SeedFileError(f"{path}: a Segmentation highdicom cannot read ({type(error).__name__}: {error}).") \
            from None
    _check_frame(path, "", str(seg.get("FrameOfReferenceUID", "")) or None, reference)
    labelmap = seg.get("SegmentationType") == "LABELMAP"
    scale = float(seg.get("MaximumFractionalValue", 1)) if seg.get("SegmentationType") == "FRACTIONAL" else 1.0
    rows, columns = np.mgrid[0:seg.Rows, 0:seg.Columns]
    sums: Dict[int, np.ndarray] = {}
    try:
        for frame in range(len(pixels)):
            position = _functional(seg, frame, "PlanePositionSequence", "ImagePositionPatient")
            orientation = _functional(seg, frame, "PlaneOrientationSequence", "ImageOrientationPatient")
            spacing = _functional(seg, frame, "PixelMeasuresSequence", "PixelSpacing")
            if labelmap:
                weights = {int(n): (pixels[frame] == n).astype(float) for n in np.unique(pixels[frame]) if n > 0}
            else:
                number = int(_functional(seg, frame, "SegmentIdentificationSequence", "ReferencedSegmentNumber"))
                weights = {number: pixels[frame] / scale}
            for number, weight in weights.items():
                total = weight.sum()
                if total == 0:
                    continue
                mean_row, mean_column = (weight * rows).sum() / total, (weight * columns).sum() / total
                lps = position + orientation[:3] * spacing[1] * mean_column + orientation[3:] * spacing[0] * mean_row
                sums[number] = sums.get(number, np.zeros(4)) + np.append(lps * total, total)
    except SeedFileError as error:
        raise SeedFileError(f"{path}: {error}.") from None
    seeds = []
    for segment in seg.SegmentSequence:
        number = int(segment.SegmentNumber)
        where = f"{path}, segment {number}"
        if number not in sums:
            raise SeedFileError(f"{where} ({segment.get('SegmentLabel', '')!r}) has no voxels.")
        seeds.append(LabelledSeed(lps_to_ras(sums[number][:3] / sums[number][3]), _label(segment.get("SegmentLabel")),
                                  where))
    if not seeds:
        raise SeedFileError(f"{path}: the Segmentation has no segment.")
    return SeedList(seeds, [])


def read_dicom_seeds(path: Union[str, Path], reference: Optional[DicomReference] = None) -> SeedList:
    """Seeds from a DICOM SR (TID 1500) or Segmentation file; ``reference``: the CT series' frame of
    reference and image geometry (None: the CT is not DICOM, and nothing can be compared)."""
    import pydicom

    path = Path(path)
    if not path.is_file():
        raise SeedFileError(f"DICOM seeds {path}: {'is a folder' if path.is_dir() else 'no such file'}.")
    try:
        sop_class = str(pydicom.dcmread(str(path), stop_before_pixels=True).SOPClassUID)
    except Exception as error:  # noqa: BLE001 - pydicom raises many kinds on a file that is not DICOM
        raise SeedFileError(f"{path} is not a DICOM file ({type(error).__name__}: {error}).") from None
    try:
        import highdicom  # noqa: F401 - the SR and SEG readers below use it
    except ImportError:
        raise SeedFileError(f"Reading seeds from {path} needs highdicom: {DICOM_EXTRA}") from None
    notes = [] if reference is not None else [f"{path}: frame of reference not checked (the CT is not a DICOM series)."]
    if sop_class in SEGMENTATION_STORAGE:
        found = _seg_seeds(path, reference)
    elif sop_class in SR_STORAGE:
        found = _sr_seeds(path, reference)
    else:
        name = getattr(pydicom.uid.UID(sop_class), "name", sop_class)
        raise SeedFileError(f"{path} is a {name} object, not a DICOM SR (TID 1500) or Segmentation.")
    return SeedList(found.seeds, notes + found.notes)


def check_unique_labels(seeds: Sequence[LabelledSeed]) -> None:
    """Two nodules with one label would be confused in every table: refused, both named."""
    first: Dict[str, LabelledSeed] = {}
    for seed in seeds:
        if seed.label is None:
            continue
        if seed.label in first:
            raise SeedFileError(f"The label {seed.label!r} is given twice ({first[seed.label].origin} and "
                                f"{seed.origin}); labels name the nodules in the outputs, so each must be unique.")
        first[seed.label] = seed
