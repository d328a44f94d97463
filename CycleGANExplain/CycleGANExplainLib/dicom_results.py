"""Explanations as DICOM objects that file with the CT's study: a Parametric Map of the relevance, a
Segmentation of its red and blue regions and a Comprehensive 3D SR with the numbers.

Written with highdicom (on pydicom), which checks each object as it builds it. For each explained
nodule (a relevance volume of one or more axial patches and its IJK-to-RAS, as the patch sampler
places them):

- Parametric Map: R itself as 32-bit float frames with a real world value mapping (the method's
  units), one frame per patch slice.
- Segmentation: binary, "malignancy-indicating" (R >= TRANSPARENT_BELOW x the display limit, what
  the overlay paints red) and "benign-indicating" (R <= minus that, painted blue).
- Comprehensive 3D SR: p(x), p(G-(x)), p(G+(x)) of the seed's slice, the seed (a 3D point in the
  CT's frame of reference), the bundle, the method, the caveats and the research-use notice, and
  references to the map and the segmentation; then one "Explained slice" container per slice of the
  volume (increasing S): its offset along S from the seed (NUM, mm), its patch's centre (a 3D point,
  whose z is the slice's position in the patient frame) and its p(x), p(G-(x)), p(G+(x)) (NUM, the
  root's codes). A reader scrolling through the nodule sees how the decision changes slice by slice;
  the root's numbers stay the seed's so that a reader of the root alone gets the clicked slice.

Frames keep the patch's own grid, placed by explicit plane positions in the source's frame of
reference (PlanePositionSequence / PlaneOrientationSequence, LPS). Resampling onto the source's
slices instead would interpolate R twice (the sampler already interpolated the CT onto the patch)
and, for a seed between two slices, move the map by up to half a slice; with explicit positions the
decoded values are the R that was computed and shown, where it was computed, and a viewer fuses
them with the CT through the shared frame of reference. Both objects reference every instance of
the source series.

Patient and study attributes are copied from the source, as DICOM requires for the objects to be
filed with the study (same StudyInstanceUID, new series). They go into the DICOM objects only:
nothing here logs, prints or names files after them.

highdicom is imported inside the functions: Slicer does not bundle it (the module installs it on
demand, package_installer) and the command line needs it only for ``--dicom``. The code keeps to
the API of highdicom 0.22, the newest for Slicer's Python 3.9.
"""

from __future__ import annotations

import copy
import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import __version__
from .attribution_methods import method_info
from .caveats import explanation_caveats
from .notices import NOT_CLEARED, RESEARCH_NOTICE
from .overlay import BENIGN_RGB, MALIGNANT_RGB, TRANSPARENT_BELOW, display_limit

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from .explanation import Explanation
    from .nodule_stack import NoduleStack

HIGHDICOM_REQUIREMENT = "highdicom>=0.22"  # pyproject's `dicom` extra holds the same (a test compares)
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
MANUFACTURER = "CycleGANExplain"
MANUFACTURER_MODEL_NAME = "cyclegan-explain"
# Three new series in the CT's study, one instance per explained nodule in each.
SERIES_NUMBERS = {"map": 9901, "regions": 9902, "report": 9903}
SERIES_DESCRIPTIONS = {
    "map": "Relevance map - research use only",
    "regions": "Relevance regions - research use only",
    "report": "Explanation report - research use only",
}
FILE_STEMS = {"map": "relevance_map", "regions": "relevance_regions", "report": "explanation_report"}
# The codes of this tool's own concepts: a private coding scheme ("99" prefix, as DICOM PS3.16 8.2
# asks), identified in each object's CodingSchemeIdentificationSequence.
CODING_SCHEME = "99CGEXPLAIN"
CODING_SCHEME_NAME = "CycleGANExplain concepts"
_CONCEPTS = {
    "report": ("CGE001", "Explanation of a malignancy classifier"),
    "notice": ("CGE002", "Research-use notice"),
    "bundle": ("CGE003", "Model bundle"),
    "method": ("CGE004", "Explanation method"),
    "seed": ("CGE005", "Explained point"),
    "p_x": ("CGE006", "Malignancy probability of x"),
    "p_neg": ("CGE007", "Malignancy probability of G-(x)"),
    "p_pos": ("CGE008", "Malignancy probability of G+(x)"),
    "limit": ("CGE009", "Relevance display limit"),
    "caveat": ("CGE010", "Caveat"),
    "map": ("CGE011", "Relevance map"),
    "regions": ("CGE012", "Relevance regions"),
    "relevance": ("CGE013", "Explanation relevance"),
    "malignant": ("CGE014", "Malignancy-indicating relevance"),
    "benign": ("CGE015", "Benign-indicating relevance"),
    "slice": ("CGE016", "Explained slice"),
    "offset": ("CGE017", "Offset along S from the explained point"),
    "slice_centre": ("CGE018", "Centre of the slice's patch"),
}
# Type 2 attributes of the modules copied from the source: present (empty if unknown) in every CT,
# but a source written without them would make highdicom fail; the copy gets them empty.
_TYPE_2_SOURCE_ATTRIBUTES = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                             "ReferringPhysicianName", "StudyID", "AccessionNumber")


class DicomResultsError(ValueError):
    """The results cannot be written as DICOM for this source (the message says why and what is written instead)."""


@dataclass(frozen=True)
class SliceNumbers:
    """One explained slice of a nodule: where its patch lies and what the networks gave it."""

    offset_mm: float  # along S from the seed; 0 for the seed's own slice
    centre_ras: Tuple[float, float, float]  # the patch's centre (the seed shifted by offset_mm along S)
    p_x: float
    p_neg: float
    p_pos: float


def slice_numbers(item: "Explanation", offset_mm: float) -> SliceNumbers:
    """The SR's account of one slice's explanation ``item``, cut ``offset_mm`` along S from the seed."""
    centre = tuple(float(v) for v in np.asarray(item.seed_ras, dtype=float))
    return SliceNumbers(float(offset_mm), centre, float(item.p_x), float(item.p_neg), float(item.p_pos))


@dataclass(frozen=True)
class NoduleResult:
    """What the DICOM objects say of one explained nodule."""

    relevance_kji: np.ndarray  # float32 [slices, rows, columns]
    ijk_to_ras: np.ndarray  # 4x4, Slicer's convention (column, row, slice index to RAS mm)
    seed_ras: np.ndarray
    p_x: float
    p_neg: float
    p_pos: float
    display_limit: float
    caveats: Tuple[str, ...] = ()
    slices: Tuple[SliceNumbers, ...] = ()
    """Each explained slice's position and numbers, in the volume's slice order (empty: none stated)."""


def nodule_result(item: "Explanation", method: str,
                  stack: Optional[Tuple[np.ndarray, np.ndarray]] = None,
                  slices: Optional[Sequence[SliceNumbers]] = None) -> NoduleResult:
    """The DICOM account of the seed's explanation ``item``: its relevance volume is ``stack``
    (relevance_kji, ijk_to_ras), the slices through the nodule, or else ``item``'s own patch as a
    one-slice volume. The root numbers are the seed's slice's; ``slices`` (default: the seed's slice
    alone) each slice's; the display limit is the volume's (as the overlay's)."""
    relevance, ijk_to_ras = stack if stack is not None else (np.asarray(item.relevance)[None], item.patch_to_ras)
    relevance = np.asarray(relevance, dtype=np.float32)
    return NoduleResult(relevance, np.asarray(ijk_to_ras, dtype=float), np.asarray(item.seed_ras, dtype=float),
                        item.p_x, item.p_neg, item.p_pos, display_limit(relevance, method),
                        tuple(caveat.text for caveat in explanation_caveats(item, method)),
                        tuple(slices) if slices is not None else (slice_numbers(item, 0.0),))


def stack_result(stack: "NoduleStack", method: str) -> NoduleResult:
    """The DICOM account of a nodule explained through its slices: the stack's relevance volume and the
    numbers of its seed's own slice, and every slice's offset, centre and numbers. What every front end
    writes per nodule (the command line for each seed, the module and the web viewer for the shown nodule)."""
    slices = [slice_numbers(item, offset) for item, offset in zip(stack.explanations, stack.offsets_mm)]
    return nodule_result(stack.centre, method, (stack.relevance, stack.stack_to_ras), slices)


def require_highdicom() -> None:
    """DicomResultsError naming the pip command when highdicom is not installed."""
    if importlib.util.find_spec("highdicom") is None:
        raise DicomResultsError(f"Writing DICOM needs highdicom, which is not installed: pip install "
                                f"'{HIGHDICOM_REQUIREMENT}' (or the package's dicom extra: "
                                "pip install 'cyclegan-explain[dicom]').")


def read_source_series(files: Sequence[Union[str, Path]]) -> List["Dataset"]:
    """The headers (no pixels) of the source series' files, checked to be one series the results can
    reference and be placed in; DicomResultsError otherwise (naming the file, never the patient)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    if not files:
        raise DicomResultsError("No DICOM files were given for the source series.")
    datasets = []
    for name in files:
        try:
            dataset = pydicom.dcmread(str(name), stop_before_pixels=True)
        except (InvalidDicomError, OSError) as error:
            raise DicomResultsError(f"Cannot read {Path(name).name} as DICOM: {error}") from error
        for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
            if not dataset.get(keyword):
                raise DicomResultsError(f"DICOM file {Path(name).name} has no {keyword}; results cannot reference it.")
        if not dataset.get("FrameOfReferenceUID"):
            raise DicomResultsError(
                f"DICOM file {Path(name).name} has no FrameOfReferenceUID, so DICOM results could not be placed on "
                "the CT; the relevance is written as NRRD in the CT's patient space instead (without --dicom).")
        datasets.append(dataset)
    for keyword in ("SeriesInstanceUID", "FrameOfReferenceUID"):
        if len({dataset.get(keyword) for dataset in datasets}) > 1:
            raise DicomResultsError(f"The source files do not share one {keyword}; they are not one CT series.")
    return datasets


def _source_copies(source: Sequence["Dataset"]) -> List["Dataset"]:
    copies = []
    for dataset in source:
        dataset = copy.copy(dataset)  # shallow: only top-level attributes are added
        for keyword in _TYPE_2_SOURCE_ATTRIBUTES:
            if keyword not in dataset:
                setattr(dataset, keyword, "")
        copies.append(dataset)
    return copies


@dataclass(frozen=True)
class FrameGeometry:
    """The relevance volume's frames in DICOM terms (LPS millimetres)."""

    orientation: Tuple[float, ...]  # ImageOrientationPatient: along a row, then down a column
    pixel_spacing: Tuple[float, float]  # PixelSpacing: between rows, then between columns
    slice_thickness: float
    positions: Tuple[Tuple[float, float, float], ...]  # ImagePositionPatient of each frame's first pixel


def frame_geometry(ijk_to_ras: np.ndarray, slices: int) -> FrameGeometry:
    """Where each slice of a relevance volume placed by ``ijk_to_ras`` lies, as DICOM states it."""
    ijk_to_lps = LPS_TO_RAS @ np.asarray(ijk_to_ras, dtype=float)
    column_step, row_step, slice_step = (ijk_to_lps[:3, axis] for axis in range(3))
    spacing_i, spacing_j = float(np.linalg.norm(column_step)), float(np.linalg.norm(row_step))
    row_cosine, column_cosine = column_step / spacing_i, row_step / spacing_j
    if abs(float(row_cosine @ column_cosine)) > 1e-4:
        raise DicomResultsError("The relevance volume's rows and columns are not perpendicular; it cannot be "
                                "written as DICOM frames.")
    normal = np.cross(row_cosine, column_cosine)
    # The distance between frames along their normal (the patch sampler gives a one-slice patch its
    # in-plane spacing); a zero slice axis falls back to the in-plane spacing.
    thickness = abs(float(slice_step @ normal)) or spacing_i
    positions = tuple(tuple(float(v) for v in (ijk_to_lps @ np.array([0.0, 0.0, k, 1.0]))[:3]) for k in range(slices))
    return FrameGeometry(tuple(float(v) for v in (*row_cosine, *column_cosine)), (spacing_j, spacing_i), thickness,
                         positions)


def _srgb_to_cielab(rgb: Tuple[float, float, float]) -> Tuple[float, float, float]:
    """CIE L*a*b* (D65) of an sRGB colour: SEG's recommended display colour is stated in CIELab."""
    linear = np.array([c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb])
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ linear
    ratio = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(ratio > (6 / 29) ** 3, np.cbrt(ratio), ratio / (3 * (6 / 29) ** 2) + 4 / 29)
    return float(116 * f[1] - 16), float(500 * (f[0] - f[1])), float(200 * (f[1] - f[2]))


def _code(key: str):
    from highdicom.sr import CodedConcept

    value, meaning = _CONCEPTS[key]
    return CodedConcept(value, CODING_SCHEME, meaning)


def _identify_coding_scheme(dataset: "Dataset") -> None:
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodingSchemeDesignator = CODING_SCHEME
    item.CodingSchemeName = CODING_SCHEME_NAME
    item.CodingSchemeResponsibleOrganization = MANUFACTURER
    dataset.CodingSchemeIdentificationSequence = [item]


def _equipment(bundle_name: str) -> dict:
    return {"manufacturer": MANUFACTURER, "manufacturer_model_name": MANUFACTURER_MODEL_NAME,
            "software_versions": [f"cyclegan-explain {__version__}", bundle_name],
            "device_serial_number": "none"}


def _plane_arguments(geometry: FrameGeometry) -> dict:
    import highdicom as hd

    patient = hd.CoordinateSystemNames.PATIENT
    return {
        "pixel_measures": hd.PixelMeasuresSequence(pixel_spacing=list(geometry.pixel_spacing),
                                                   slice_thickness=geometry.slice_thickness,
                                                   spacing_between_slices=geometry.slice_thickness),
        "plane_orientation": hd.PlaneOrientationSequence(patient, list(geometry.orientation)),
        "plane_positions": [hd.PlanePositionSequence(patient, list(position)) for position in geometry.positions],
    }


def _parametric_map(source: Sequence["Dataset"], result: NoduleResult, geometry: FrameGeometry, method: str,
                    bundle_name: str, instance_number: int, series_uid: str) -> "Dataset":
    import highdicom as hd

    info = method_info(method)
    values = np.ascontiguousarray(result.relevance_kji, dtype=np.float32)
    mapping = hd.pm.RealWorldValueMapping(
        lut_label="R", lut_explanation=info.units[:64], unit=hd.sr.CodedConcept("1", "UCUM", "no units"),
        value_range=(float(values.min()), float(values.max())), slope=1, intercept=0,
        quantity_definition=_code("relevance"))
    with warnings.catch_warnings():
        # highdicom 0.28 deprecates the window arguments that 0.22 (Slicer's Python 3.9) requires.
        warnings.filterwarnings("ignore", message=".*window_center.*window_width.*")
        dataset = hd.pm.ParametricMap(
            source, values, series_uid, SERIES_NUMBERS["map"], hd.UID(), instance_number,
            contains_recognizable_visual_features=False, real_world_value_mappings=[mapping],
            window_center=0.0, window_width=2.0 * result.display_limit,
            content_label="RELEVANCE", content_description=f"{info.label} relevance. {RESEARCH_NOTICE}"[:64],
            series_description=SERIES_DESCRIPTIONS["map"], **_equipment(bundle_name), **_plane_arguments(geometry))
    # General Series' Laterality is type 2C, required when the body part is paired (the lungs): the
    # source's value, else present and empty (unknown), which dciodvfy asks of a parametric map.
    dataset.Laterality = source[0].get("Laterality", "")
    # The window is in R's units (well under 1): LINEAR_EXACT is the function that allows a width below 1.
    for item in dataset.SharedFunctionalGroupsSequence[0].FrameVOILUTSequence:
        item.VOILUTFunction = "LINEAR_EXACT"
    _identify_coding_scheme(dataset)
    return dataset


def region_masks(result: NoduleResult, signed: bool) -> List[Tuple[str, np.ndarray]]:
    """(concept key, mask) of each region the overlay paints: red where R >= TRANSPARENT_BELOW x the
    display limit, blue where R <= minus that (an unsigned map has no blue)."""
    threshold = TRANSPARENT_BELOW * result.display_limit
    masks = [("malignant", result.relevance_kji >= threshold)]
    if signed:
        masks.append(("benign", result.relevance_kji <= -threshold))
    return masks


def _segmentation(source: Sequence["Dataset"], result: NoduleResult, geometry: FrameGeometry, method: str,
                  bundle_name: str, instance_number: int, series_uid: str) -> "Dataset":
    import highdicom as hd

    info = method_info(method)
    masks = region_masks(result, info.signed)
    algorithm = hd.AlgorithmIdentificationSequence(name=info.label[:64], family=_code("relevance"),
                                                   version=bundle_name[:64])
    descriptions = []
    for number, (key, _mask) in enumerate(masks, start=1):
        description = hd.seg.SegmentDescription(number, _CONCEPTS[key][1], _code("relevance"), _code(key),
                                                "AUTOMATIC", algorithm_identification=algorithm)
        colour = MALIGNANT_RGB if key == "malignant" else BENIGN_RGB
        description.RecommendedDisplayCIELabValue = list(hd.color.CIELabColor(*_srgb_to_cielab(colour)).value)
        descriptions.append(description)
    pixels = np.stack([mask for _key, mask in masks], axis=-1).astype(np.uint8)
    dataset = hd.seg.Segmentation(
        source, pixels, hd.seg.SegmentationTypeValues.BINARY, descriptions, series_uid, SERIES_NUMBERS["regions"],
        hd.UID(), instance_number, omit_empty_frames=False, content_label="RELEVANCE_AREAS",
        content_description=f"{info.label} regions. {RESEARCH_NOTICE}"[:64],
        series_description=SERIES_DESCRIPTIONS["regions"], **_equipment(bundle_name), **_plane_arguments(geometry))
    _identify_coding_scheme(dataset)
    return dataset


def _report(source: Sequence["Dataset"], result: NoduleResult, method: str, bundle_name: str,
            referenced: Sequence["Dataset"], instance_number: int, series_uid: str) -> "Dataset":
    import highdicom as hd
    from highdicom.sr import (CompositeContentItem, ContainerContentItem, ContentSequence, GraphicTypeValues3D,
                              NumContentItem, RelationshipTypeValues, Scoord3DContentItem, TextContentItem)

    contains = RelationshipTypeValues.CONTAINS
    info = method_info(method)
    no_units = hd.sr.CodedConcept("1", "UCUM", "no units")
    millimetres = hd.sr.CodedConcept("mm", "UCUM", "millimeter")
    frame_of_reference = source[0].FrameOfReferenceUID
    seed_lps = (LPS_TO_RAS[:3, :3] @ np.asarray(result.seed_ras, dtype=float)).tolist()

    def explained_slice(numbers: SliceNumbers) -> ContainerContentItem:
        centre_lps = (LPS_TO_RAS[:3, :3] @ np.asarray(numbers.centre_ras, dtype=float)).tolist()
        container = ContainerContentItem(_code("slice"), relationship_type=contains)
        container.ContentSequence = ContentSequence([
            NumContentItem(_code("offset"), numbers.offset_mm, millimetres, relationship_type=contains),
            Scoord3DContentItem(_code("slice_centre"), GraphicTypeValues3D.POINT, np.array([centre_lps]),
                                frame_of_reference, relationship_type=contains),
            *(NumContentItem(_code(key), value, no_units, relationship_type=contains)
              for key, value in (("p_x", numbers.p_x), ("p_neg", numbers.p_neg), ("p_pos", numbers.p_pos))),
        ])
        return container

    items = [
        TextContentItem(_code("notice"), f"{RESEARCH_NOTICE} {NOT_CLEARED}", contains),
        TextContentItem(_code("bundle"), bundle_name, contains),
        TextContentItem(_code("method"), f"{info.label}: {info.reading}", contains),
        Scoord3DContentItem(_code("seed"), GraphicTypeValues3D.POINT, np.array([seed_lps]),
                            frame_of_reference, relationship_type=contains),
        *(NumContentItem(_code(key), value, no_units, relationship_type=contains)
          for key, value in (("p_x", result.p_x), ("p_neg", result.p_neg), ("p_pos", result.p_pos),
                             ("limit", result.display_limit))),
        *(TextContentItem(_code("caveat"), text, contains) for text in result.caveats),
        *(CompositeContentItem(_code(key), dataset.SOPClassUID, dataset.SOPInstanceUID, contains)
          for key, dataset in zip(("map", "regions"), referenced)),
        *(explained_slice(numbers) for numbers in result.slices),
    ]
    root = ContainerContentItem(_code("report"))
    root.ContentSequence = ContentSequence(items)
    dataset = hd.sr.Comprehensive3DSR(
        [*source, *referenced], root, series_uid, SERIES_NUMBERS["report"], hd.UID(), instance_number,
        manufacturer=MANUFACTURER, is_complete=True, series_description=SERIES_DESCRIPTIONS["report"])
    _identify_coding_scheme(dataset)
    return dataset


def write_dicom_results(results: Sequence[NoduleResult], source: Sequence["Dataset"], folder: Union[str, Path],
                        method: str, bundle_name: str) -> List[Tuple[Path, Path, Path]]:
    """Write, for each result, a Parametric Map, a Segmentation and a Comprehensive 3D SR into
    ``folder`` (created); returns each result's three files, named by kind and nodule number only.

    ``source``: the CT series' headers (read_source_series). DicomResultsError when highdicom is
    missing; highdicom's ValueError when an object it builds would be invalid.
    """
    require_highdicom()
    import highdicom as hd

    source = _source_copies(source)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    series = {kind: hd.UID() for kind in SERIES_NUMBERS}
    digits = max(2, len(str(len(results))))
    written: List[Tuple[Path, Path, Path]] = []
    for number, result in enumerate(results, start=1):
        geometry = frame_geometry(result.ijk_to_ras, result.relevance_kji.shape[0])
        parametric_map = _parametric_map(source, result, geometry, method, bundle_name, number, series["map"])
        regions = _segmentation(source, result, geometry, method, bundle_name, number, series["regions"])
        report = _report(source, result, method, bundle_name, (parametric_map, regions), number, series["report"])
        paths = tuple(folder / f"{FILE_STEMS[kind]}_{number:0{digits}d}.dcm" for kind in ("map", "regions", "report"))
        for path, dataset in zip(paths, (parametric_map, regions, report)):
            dataset.save_as(str(path))
        written.append(paths)
    return written

