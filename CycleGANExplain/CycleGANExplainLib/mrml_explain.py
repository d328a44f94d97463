"""Explaining a CT volume node at a seed point, as MRML nodes in, explanation and overlay out.

MRML-level only (``slicer`` MRML classes, VTK and ``slicer.util``'s array helpers; no Qt,
``slicer.app`` or GUI functions): the Slicer module's Logic delegates here, and the tests run it
on a bare slicer-core scene.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, List, NamedTuple, Optional, Sequence, Union

import numpy as np

from .attribution_methods import DEFAULT_METHOD
from .dicom_results import DicomResultsError, read_source_series, stack_result, write_dicom_results
from .explain_worker import Job, run_job
from .explanation import ExplanationBatch, require_method
from .model_bundle import read_metadata, resolve_bundle
from .mrml_overlay import update_overlay_node
from .nodule_stack import DEFAULT_HALF_EXTENT_MM, NoduleStack, StackPlan, plan_stack, stacks_from_batch
from .patch_sampling import patch_region
from .volume_checks import check_ct_volume

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

StatusCallback = Callable[[str], None]


class NoInputVolumeError(ValueError):
    """No volume (or a volume without voxels) was given."""


class VolumeExplanation(NamedTuple):
    batch: ExplanationBatch
    """The explanations, ordered by increasing S; ``batch[central_index]`` is the seed's."""
    overlay_node: object
    """The vtkMRMLScalarVolumeNode holding R on the patches' geometry."""
    central_index: int
    stack: Optional[NoduleStack] = None
    """The slices through the shown nodule (each slice's probabilities; the overlay's voxels and geometry,
    unless the overlay holds every point of a case: mrml_case)."""


def volume_array_and_geometry(volume_node) -> "tuple[np.ndarray, np.ndarray]":
    """Read-only voxel array (slice, row, column) and world IJK-to-RAS matrix of a volume node.

    The array is a read-only view of the node's voxels: nothing downstream can modify the input.
    A linear parent transform is included so that the geometry matches world seed positions.
    """
    import slicer
    import vtk

    if volume_node is None or volume_node.GetImageData() is None:
        raise NoInputVolumeError("Select an input CT volume first (load one, or press 'Load sample CT').")
    voxels = slicer.util.arrayFromVolume(volume_node).view()
    voxels.flags.writeable = False
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    ijk_to_ras = slicer.util.arrayFromVTKMatrix(matrix)
    transform_node = volume_node.GetParentTransformNode()
    if transform_node is not None:
        if not transform_node.IsTransformToWorldLinear():
            raise ValueError(
                f"Volume '{volume_node.GetName()}' is under a non-linear transform; harden the transform "
                "(Data module) before explaining."
            )
        to_world = vtk.vtkMatrix4x4()
        transform_node.GetMatrixTransformToWorld(to_world)
        ijk_to_ras = slicer.util.arrayFromVTKMatrix(to_world) @ ijk_to_ras
    return voxels, ijk_to_ras


class ExplainRequest(NamedTuple):
    """What an explanation needs, read from the scene and checked, before any inference.

    ``compute`` needs nothing from the scene; the Slicer panel sends ``worker_job(request)`` to the
    explanation process while its event loop goes on; ``voxels`` is a read-only view of the volume node's voxels, which the
    request keeps alive by holding the node.
    """

    volume_node: object
    voxels: np.ndarray
    ijk_to_ras: np.ndarray
    seeds: np.ndarray
    central_index: int
    bundle_dir: Union[str, Path, None]
    device: str
    method: str
    allow_unknown_bundle: bool
    plan: Optional[StackPlan] = None
    """The slices through the nodule (``prepare_request``): ``seeds`` are its patches' centres."""


# Volume node ID -> the stamp of the voxels and geometry that passed check_ct_volume: the whole-volume
# check (0.1-0.3 s at 512x512x600) runs once per volume content, not on every click.
_checked_volumes: Dict[str, tuple] = {}


def check_volume_once(volume_node, voxels: np.ndarray, ijk_to_ras: np.ndarray) -> None:
    """check_ct_volume, skipped when this node's voxels and geometry passed it unchanged (VTK's
    modification times change with any edit of the image data)."""
    image = volume_node.GetImageData()
    scalars = image.GetPointData().GetScalars()
    stamp = (image.GetMTime(), scalars.GetMTime() if scalars is not None else None, voxels.shape, voxels.dtype.str,
             np.asarray(ijk_to_ras, dtype=float).tobytes())
    if _checked_volumes.get(volume_node.GetID()) == stamp:
        return
    check_ct_volume(voxels, ijk_to_ras)
    _checked_volumes[volume_node.GetID()] = stamp


def prepare_request(volume_node, seed_ras: Sequence[float], bundle_dir: Union[str, Path, None] = None,
                    device: str = "auto", half_extent_mm: float = DEFAULT_HALF_EXTENT_MM,
                    method: str = DEFAULT_METHOD, allow_unknown_bundle: bool = False) -> ExplainRequest:
    """Read and check the volume node and the seed, and plan the slices through the nodule within
    ``half_extent_mm`` of it (``nodule_stack.plan_stack``, on the whole volume; scene access: the event
    loop's thread)."""
    require_method(method)
    voxels, ijk_to_ras = volume_array_and_geometry(volume_node)
    check_volume_once(volume_node, voxels, ijk_to_ras)
    metadata = read_metadata(resolve_bundle(bundle_dir))
    plan = plan_stack(voxels, ijk_to_ras, seed_ras, half_extent_mm, size_px=metadata.patch_size_px,
                      extent_mm=metadata.patch_extent_mm)
    return ExplainRequest(volume_node, voxels, ijk_to_ras, plan.seeds_ras, plan.centre_index, bundle_dir, device,
                          method, allow_unknown_bundle, plan)


def worker_job(request: ExplainRequest) -> Job:
    """The request as the explanation process takes it: only the voxels its patches sample (at the
    bundle's patch size and extent), no scene node."""
    bundle_dir = resolve_bundle(request.bundle_dir)
    metadata = read_metadata(bundle_dir)
    voxels, ijk_to_ras = patch_region(request.voxels, request.ijk_to_ras, request.seeds, metadata.patch_size_px,
                                      metadata.patch_extent_mm)
    return Job(voxels, ijk_to_ras, request.seeds, str(bundle_dir), request.device, request.method,
               request.allow_unknown_bundle, warn_outside=request.plan is None)


def compute(request: ExplainRequest, status: Optional[StatusCallback] = None) -> ExplanationBatch:
    """Load the bundle and explain the request's patches in this process (the scripted Logic.explain)."""
    report = status or (lambda message: None)
    report(f"Explaining {len(request.seeds)} patch(es) (loading the model bundle the first time)...")
    return run_job(Job(request.voxels, request.ijk_to_ras, request.seeds, request.bundle_dir, request.device,
                       request.method, request.allow_unknown_bundle, warn_outside=request.plan is None))


def show(scene, request: ExplainRequest, batch: ExplanationBatch) -> VolumeExplanation:
    """Write the slices through the nodule into the scene's overlay node, one volume placed on them
    (the event loop's thread); the nodule's warnings join the batch's."""
    stack = stacks_from_batch([request.plan], batch).stacks[0]
    overlay_node = update_overlay_node(scene, stack.relevance, stack.stack_to_ras, source_volume=request.volume_node,
                                       method=request.method)
    return VolumeExplanation(batch, overlay_node, request.central_index, stack)


def explain_volume_node(
    scene,
    volume_node,
    seed_ras: Sequence[float],
    bundle_dir: Union[str, Path, None] = None,
    device: str = "auto",
    half_extent_mm: float = DEFAULT_HALF_EXTENT_MM,
    status: Optional[StatusCallback] = None,
    method: str = DEFAULT_METHOD,
    allow_unknown_bundle: bool = False,
) -> VolumeExplanation:
    """Explain the classifier's decision at ``seed_ras`` and on every slice within ``half_extent_mm``
    of it with ``method`` and show the maps as the scene's overlay node (the same node whatever the
    method): ``prepare_request``, ``compute`` and ``show`` in one call.

    Raises NoInputVolumeError, SeedOutsideVolumeError, volume_checks.NotCTError, the bundle's
    errors (BundleIntegrityError when a model file fails its checksum, UntrustedBundleError for a
    bundle the package does not ship unless ``allow_unknown_bundle``), ValueError for an unknown
    method and attribution_methods.MissingDependencyError, with specific messages, before any
    inference.
    """
    request = prepare_request(volume_node, seed_ras, bundle_dir, device, half_extent_mm, method,
                              allow_unknown_bundle)
    batch = compute(request, status)
    report = status or (lambda message: None)
    report(f"Updating the overlay ({batch.method_label})...")
    return show(scene, request, batch)


# Set by Slicer's DICOM scalar volume plugin on a volume loaded from the DICOM database: its instances' UIDs.
DICOM_INSTANCE_UIDS_ATTRIBUTE = "DICOM.instanceUIDs"


def dicom_source_files(volume_node, file_for_instance: Callable[[str], str]) -> List[str]:
    """The files of the DICOM series ``volume_node`` was loaded from, by ``file_for_instance`` (Slicer's
    ``slicer.dicomDatabase.fileForInstance``); DicomResultsError saying what to do for any other volume."""
    uids = (volume_node.GetAttribute(DICOM_INSTANCE_UIDS_ATTRIBUTE) or "").split()
    if not uids:
        raise DicomResultsError(
            "This CT was not loaded from Slicer's DICOM database, so DICOM results would have no patient, study or "
            "frame of reference to belong to. Load the CT through the DICOM module to save DICOM results, or save the "
            "overlay volume as NRRD (File > Save Data): it lies in the CT's patient space.")
    files = [file_for_instance(uid) for uid in uids]
    missing = sum(1 for name in files if not name or not Path(name).is_file())
    if missing:
        raise DicomResultsError(f"{missing} of the CT's {len(files)} DICOM files are no longer in the DICOM database "
                                "or on disk; import the series again.")
    return files


def save_dicom_results(result: VolumeExplanation, volume_node, folder: Union[str, Path],
                       file_for_instance: Callable[[str], str]) -> List[Path]:
    """Write the shown explanation as DICOM (dicom_results: a parametric map of the shown nodule's stack, the
    overlay volume's voxels for a single nodule, a segmentation of its red and blue regions, an SR with the
    seed's numbers) into ``folder``, in the CT's study."""
    if volume_node.GetParentTransformNode() is not None:
        # The files' coordinates are the untransformed CT's; the overlay lies in the transformed (world) space.
        raise DicomResultsError(f"Volume '{volume_node.GetName()}' is under a transform, so the overlay does not lie "
                                "in its DICOM files' coordinates; remove the transform and explain again.")
    source = read_source_series(dicom_source_files(volume_node, file_for_instance))
    return write_explanation_dicom(result, source, folder)


def write_explanation_dicom(result: VolumeExplanation, source: Sequence["Dataset"],
                            folder: Union[str, Path]) -> List[Path]:
    """The shown nodule as DICOM objects in the study of ``source`` (the CT series' headers,
    dicom_results.read_source_series) written into ``folder``: the module's "Save as DICOM" and the web
    viewer's download. The nodule's own stack: the overlay node may hold every point of a case (mrml_case)."""
    nodule = stack_result(result.stack, result.batch.method)
    (written,) = write_dicom_results([nodule], source, folder, result.batch.method, result.batch.bundle_name)
    return list(written)
