"""The bundled real sample CT: a chest CT with a lung tumour from TCIA's Lung-PET-CT-Dx collection.

    python -m cyclegan_explain_training.sample_tcia_ct --dicom DICOM_FOLDER --annotations XML_FOLDER \\
        --out CycleGANExplain/CycleGANExplainLib/resources/sample_data

reads one axial CT series (a folder of DICOM files, read with the command line's reader,
volume_io.read_volume) and the collection's own annotation: one PASCAL VOC XML file per annotated
image, named by the image's SOPInstanceUID, holding the tumour's bounding box in pixels. It writes

- ``LungPETCTDxChestCT.nrrd``: the annotated slices and MARGIN_SLICES on either side, whole
  512 x 512 slices, int16 HU, gzip NRRD. The file is written from the voxel array and its geometry
  alone (volume_io.write_volume): no DICOM attribute reaches it, patient identifiers included.
- ``LungPETCTDxChestCT.json``: source, licence, citations, geometry, checksums and the documented
  tumour (every annotated slice's box in RAS, and the centre a user would click).

The shipped files were made from plotly/dash-vtk's copy of the series (demos/data/ct_lung, commit
SOURCE_COMMIT) and the collection's XML files for it (read from huyenbui117/lung_CT's copy,
Annotation/, commit ANNOTATION_COMMIT). Nothing of the DICOM header is written except the geometry:
the JSON names the collection, not the subject.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pydicom

from CycleGANExplainLib.volume_io import UnreadableVolumeError, read_volume, write_volume

SAMPLE_NAME = "LungPETCTDxChestCT"
NRRD_NAME = f"{SAMPLE_NAME}.nrrd"
JSON_NAME = f"{SAMPLE_NAME}.json"
# Slices kept beyond the first and last annotated one: 8 mm each in the shipped series, enough to
# see where the tumour ends while keeping the file at a few MB.
MARGIN_SLICES = 1
# The slice whose box centre is the documented click point: the largest cross-section at which the
# tumour lies in lung, apart from the hilum (from 200 mm up the boxes also cover its hilar part).
# Chosen by looking at the annotated slices; the point is the box's centre, not a reader's mark.
CENTRE_SLICE_S_MM = 184.0

SOURCE_REPOSITORY = "https://github.com/plotly/dash-vtk"
SOURCE_COMMIT = "3219591"
SOURCE_PATH = "demos/data/ct_lung"
ANNOTATION_REPOSITORY = "https://github.com/huyenbui117/lung_CT"
ANNOTATION_COMMIT = "520adfe"
COLLECTION = "Lung-PET-CT-Dx"
COLLECTION_URL = "https://www.cancerimagingarchive.net/collection/lung-pet-ct-dx/"
LICENCE = "CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/)"
CITATION = ("Li P, Wang S, Li T, Lu J, HuangFu Y, Wang D (2020). A Large-Scale CT and PET/CT Dataset for Lung "
            "Cancer Diagnosis (Lung-PET-CT-Dx) [Data set]. The Cancer Imaging Archive. "
            "https://doi.org/10.7937/TCIA.2020.NNC2-0461")
TCIA_CITATION = ("Clark K, Vendt B, Smith K, et al. The Cancer Imaging Archive (TCIA): Maintaining and Operating a "
                 "Public Information Repository. J Digit Imaging 26(6), 1045\u20131057 (2013). "
                 "https://doi.org/10.1007/s10278-013-9622-7")
ATTRIBUTION = (f"Sample CT: one chest CT series of TCIA's {COLLECTION} collection (Li et al. 2020, "
               "https://doi.org/10.7937/TCIA.2020.NNC2-0461), licensed under CC BY 4.0, cropped to the slices "
               "around the tumour and converted to NRRD; tumour position from the collection's annotation.")
# What the annotated slices show, described by eye when the sample was made (not a report).
APPEARANCE = ("a spiculated mass of 4 to 5 cm in the posterior right lung at the level of the heart; on its upper "
              "annotated slices it reaches the right hilum")
# The collection groups subjects by histopathology: "A" is adenocarcinoma.
HISTOLOGY = {"A": "adenocarcinoma", "B": "small cell carcinoma", "E": "large cell carcinoma",
             "G": "squamous cell carcinoma"}


class SampleSourceError(ValueError):
    """The DICOM folder or the annotations cannot make the sample."""


@dataclass(frozen=True)
class Box:
    """One annotated image's box: the collection's label and pixel corners (column, row)."""

    label: str
    column_min: float
    row_min: float
    column_max: float
    row_max: float


def read_boxes(xml_path: Path) -> List[Box]:
    """The boxes of one PASCAL VOC file; a file without any, or with a malformed one, is refused."""
    try:
        root = ElementTree.parse(str(xml_path)).getroot()
    except ElementTree.ParseError as error:
        raise SampleSourceError(f"{xml_path.name} is not readable XML: {error}") from error
    boxes = []
    for element in root.iter("object"):
        corners = element.find("bndbox")
        try:
            values = [float(corners.findtext(tag)) for tag in ("xmin", "ymin", "xmax", "ymax")]
        except (AttributeError, TypeError, ValueError):
            raise SampleSourceError(f"{xml_path.name}: an object without numeric xmin, ymin, xmax, ymax") from None
        if values[0] >= values[2] or values[1] >= values[3]:
            raise SampleSourceError(f"{xml_path.name}: an empty box {values}")
        boxes.append(Box(str(element.findtext("name", "")).strip(), *values))
    if not boxes:
        raise SampleSourceError(f"{xml_path.name} holds no box")
    return boxes


def _slice_uids(dicom_dir: Path) -> Dict[str, np.ndarray]:
    """Each image's SOPInstanceUID and position (LPS, mm). Only these two attributes are read;
    they stay in memory, to match annotation files to slices."""
    positions = {}
    for path in sorted(dicom_dir.iterdir()):
        if not path.is_file():
            continue
        try:
            header = pydicom.dcmread(str(path), stop_before_pixels=True,
                                     specific_tags=["SOPInstanceUID", "ImagePositionPatient"])
            positions[str(header.SOPInstanceUID)] = np.array([float(v) for v in header.ImagePositionPatient])
        except (pydicom.errors.InvalidDicomError, AttributeError, TypeError, ValueError):
            continue  # not an image of the series: volume_io has said whether the series is whole
    return positions


def _ras_of_pixel(ras_of_ijk: np.ndarray, column: float, row: float, k: float) -> np.ndarray:
    """RAS of continuous pixel (column, row) of slice k. LabelImg's corners are pixel indices, so a
    box's centre is the centre of its pixels."""
    return (ras_of_ijk @ np.array([column, row, k, 1.0]))[:3]


def _rounded(values, digits: int = 3) -> List[float]:
    return [round(float(value), digits) for value in values]


def annotated_slices(dicom_dir: Path, annotation_dir: Path, ijk_to_ras: np.ndarray) -> Dict[int, List[Box]]:
    """Boxes by slice index k of the volume read from ``dicom_dir``; annotation files of other
    series (named by UIDs not in the folder) are ignored."""
    positions = _slice_uids(dicom_dir)
    ras_to_ijk = np.linalg.inv(ijk_to_ras)
    by_slice: Dict[int, List[Box]] = {}
    for xml_path in sorted(annotation_dir.glob("*.xml")):
        position = positions.get(xml_path.stem)
        if position is None:
            continue
        ras = np.array([-position[0], -position[1], position[2], 1.0])
        ijk = ras_to_ijk @ ras
        k = int(round(ijk[2]))
        if abs(ijk[2] - k) > 0.01 or abs(ijk[0]) > 0.01 or abs(ijk[1]) > 0.01:
            raise SampleSourceError(f"{xml_path.name}: its image does not lie on a slice of the regular volume "
                                    f"(index {ijk[:3].round(3).tolist()})")
        by_slice.setdefault(k, []).extend(read_boxes(xml_path))
    if not by_slice:
        raise SampleSourceError(f"No annotation file in {annotation_dir} is named by the SOPInstanceUID of an image "
                                f"in {dicom_dir}: the annotations belong to another series.")
    return by_slice


def _box_record(box: Box, k_cropped: int, ijk_to_ras: np.ndarray) -> dict:
    corner_a = _ras_of_pixel(ijk_to_ras, box.column_min, box.row_min, k_cropped)
    corner_b = _ras_of_pixel(ijk_to_ras, box.column_max, box.row_max, k_cropped)
    centre = (corner_a + corner_b) / 2.0
    return {
        "slice_k": k_cropped,
        "s_mm": round(float(centre[2]), 3),
        "label": box.label,
        "pixels_column_row": _rounded((box.column_min, box.row_min, box.column_max, box.row_max), 1),
        "corner_ras_mm": [_rounded(corner_a), _rounded(corner_b)],
        "centre_ras_mm": _rounded(centre),
        "size_mm": _rounded(np.abs(corner_b - corner_a)[:2], 1),
    }


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_sample(dicom_dir: Path, annotation_dir: Path, out_dir: Path, margin_slices: int = MARGIN_SLICES,
                 centre_slice_s_mm: float = CENTRE_SLICE_S_MM) -> Tuple[Path, Path]:
    """Crop, convert and describe the sample; returns the NRRD and JSON paths."""
    for folder, what in ((dicom_dir, "DICOM"), (annotation_dir, "annotation")):
        if not Path(folder).is_dir():
            raise SampleSourceError(f"The {what} folder {folder} does not exist or is not a folder.")
    if margin_slices < 0:
        raise SampleSourceError(f"--margin-slices must be 0 or more, not {margin_slices}.")
    loaded = read_volume(dicom_dir)
    if loaded.notes:
        raise SampleSourceError(f"The series is not a regular grid ({'; '.join(loaded.notes)}); the sample must "
                                "keep the scanner's own slices.")
    volume, ijk_to_ras = loaded.volume_kji, loaded.ijk_to_ras
    if not np.allclose(ijk_to_ras[:3, :3], np.diag(np.diag(ijk_to_ras[:3, :3]))):
        raise SampleSourceError("The series is not axial without obliquity; the sample's description assumes it.")
    by_slice = annotated_slices(dicom_dir, annotation_dir, ijk_to_ras)
    first = max(0, min(by_slice) - margin_slices)
    last = min(volume.shape[0] - 1, max(by_slice) + margin_slices)
    cropped = np.ascontiguousarray(volume[first:last + 1]).astype(np.int16)
    shift = np.eye(4)
    shift[2, 3] = first
    cropped_ijk_to_ras = ijk_to_ras @ shift

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    nrrd_path, json_path = out_dir / NRRD_NAME, out_dir / JSON_NAME
    write_volume(cropped, cropped_ijk_to_ras, nrrd_path)

    boxes = [_box_record(box, k - first, cropped_ijk_to_ras) for k in sorted(by_slice) for box in by_slice[k]]
    at_centre = [box for box in boxes if abs(box["s_mm"] - centre_slice_s_mm) < 1e-3]
    if len(at_centre) != 1:
        raise SampleSourceError(f"--centre-slice-s {centre_slice_s_mm:g} mm must be a slice with exactly one annotated "
                                f"box (annotated slices: {sorted({box['s_mm'] for box in boxes})}).")
    centre = at_centre[0]
    labels = sorted({box["label"] for box in boxes})
    lps = [-centre["centre_ras_mm"][0], -centre["centre_ras_mm"][1], centre["centre_ras_mm"][2]]
    spacing = np.linalg.norm(cropped_ijk_to_ras[:3, :3], axis=0)
    description = {
        "description": (f"Real chest CT: one axial series of TCIA's {COLLECTION} collection, the slices around the "
                        "annotated tumour, whole 512 x 512 slices. No DICOM attribute other than the geometry was "
                        "kept (no patient identifiers, dates or UIDs)."),
        "command": ("python -m cyclegan_explain_training.sample_tcia_ct --dicom DICOM_FOLDER --annotations "
                    "XML_FOLDER --out CycleGANExplain/CycleGANExplainLib/resources/sample_data"
                    + (f" --margin-slices {margin_slices}" if margin_slices != MARGIN_SLICES else "")),
        "source": {
            "collection": COLLECTION,
            "collection_url": COLLECTION_URL,
            "images": f"{SOURCE_REPOSITORY} (commit {SOURCE_COMMIT}), {SOURCE_PATH}/*.dcm",
            "annotations": (f"the collection's PASCAL VOC files for this series, read from the copy in "
                            f"{ANNOTATION_REPOSITORY} (commit {ANNOTATION_COMMIT}), Annotation/"),
            "series": "ThoraxRoutine, kernel B40f, 512 x 512, 8 mm slices (Siemens Sensation 10)",
        },
        "licence": LICENCE,
        "citations": [CITATION, TCIA_CITATION],
        "attribution": ATTRIBUTION,
        "data_usage": ("TCIA's data usage policy applies (https://www.cancerimagingarchive.net/"
                       "data-usage-policies-and-restrictions/): cite the collection's DOI wherever the data is used, "
                       "and make no attempt to identify the participant."),
        "changes": (f"cropped to slices {first}..{last} of the series ({len(cropped)} of {volume.shape[0]}), "
                    "rescaled to HU as int16 (the DICOM rescale), converted to gzip NRRD"),
        "file": NRRD_NAME,
        "file_sha256": sha256_file(nrrd_path),
        "voxels_sha256": hashlib.sha256(cropped.tobytes()).hexdigest(),
        "size_ijk": list(cropped.shape[::-1]),
        "spacing_mm": _rounded(spacing, 6),
        "origin_lps_mm": _rounded((np.diag([-1.0, -1.0, 1.0, 1.0]) @ cropped_ijk_to_ras)[:3, 3], 6),
        "direction": "identity (LPS axial: i to patient left, j posterior, k superior)",
        "ijk_to_ras": np.round(cropped_ijk_to_ras, 6).tolist(),
        "units": "Hounsfield units, int16",
        "nodules": [{
            "id": "T1",
            "kind": (f"lung {HISTOLOGY.get(labels[0], labels[0])} (the collection's histopathology group {labels[0]})"
                     if len(labels) == 1 else "lung tumour (labels " + ", ".join(labels) + ")"),
            "appearance": APPEARANCE,
            "centre_ras_mm": centre["centre_ras_mm"],
            "centre_lps_mm": _rounded(lps),
            "diameter_mm": round(float(np.mean(centre["size_mm"])), 1),
            "diameter_note": ("mean side of the annotated box on the centre slice (R-L and A-P), not a measured "
                              "long axis"),
            "centre_method": (f"centre of the collection's annotated box on the slice at S = {centre['s_mm']:g} mm, "
                              "the largest cross-section at which the tumour lies in lung apart from the hilum "
                              "(slice chosen by eye); not a reader's click"),
            "annotated_s_mm": [boxes[0]["s_mm"], boxes[-1]["s_mm"]],
            "boxes": boxes,
        }],
    }
    json_path.write_text(json.dumps(description, indent=2) + "\n")
    return nrrd_path, json_path


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dicom", type=Path, required=True, help="folder of the CT series' DICOM files")
    parser.add_argument("--annotations", type=Path, required=True,
                        help="folder of the collection's XML files (named by SOPInstanceUID)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the NRRD and JSON")
    parser.add_argument("--margin-slices", type=int, default=MARGIN_SLICES,
                        help=f"slices kept beyond the annotated ones (default {MARGIN_SLICES})")
    parser.add_argument("--centre-slice-s", type=float, default=CENTRE_SLICE_S_MM,
                        help="S (mm) of the slice whose box centre is the documented point "
                             f"(default {CENTRE_SLICE_S_MM:g})")
    args = parser.parse_args(argv)
    try:
        nrrd_path, json_path = write_sample(args.dicom, args.annotations, args.out, args.margin_slices,
                                            args.centre_slice_s)
    except (SampleSourceError, UnreadableVolumeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"Wrote {nrrd_path} ({nrrd_path.stat().st_size / 1e6:.2f} MB) and {json_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
