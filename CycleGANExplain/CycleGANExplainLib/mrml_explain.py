"""Explaining a CT volume node at a seed point, as MRML nodes in, explanation and overlay out.

MRML-level only (``slicer`` MRML classes, VTK and ``slicer.util``'s array helpers; no Qt,
``slicer.app`` or GUI functions): the Slicer module's Logic delegates here, and the tests run it
on a bare slicer-core scene.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, NamedTuple, Optional, Sequence, Union

import numpy as np

from .attribution_methods import DEFAULT_METHOD
from .explain_worker import Job, run_job
from .explanation import ExplanationBatch, require_method
from .model_bundle import read_metadata, resolve_bundle
from .mrml_overlay import update_overlay_node
from .patch_sampling import is_seed_inside, patch_region, require_seed_inside
from .volume_checks import check_ct_volume

StatusCallback = Callable[[str], None]


class NoInputVolumeError(ValueError):
    """No volume (or a volume without voxels) was given."""


class VolumeExplanation(NamedTuple):
    batch: ExplanationBatch
    """The explanations, ordered by increasing S; ``batch[central_index]`` is the seed's."""
    overlay_node: object
    """The vtkMRMLScalarVolumeNode holding R on the patches' geometry."""
    central_index: int


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


def axial_slice_spacing(ijk_to_ras: np.ndarray) -> float:
    """Distance along S between neighbouring slices: the largest S step of one index axis."""
    return float(np.max(np.abs(np.asarray(ijk_to_ras, dtype=float)[2, :3])))


def neighbour_seeds(
    voxels_kji: np.ndarray, ijk_to_ras: np.ndarray, seed_ras: Sequence[float], neighbours: int
) -> "tuple[np.ndarray, int]":
    """The seed and up to ``neighbours`` seeds above and below it, one slice spacing apart.

    Returns (seeds ordered by increasing S, index of the original seed). Neighbours that fall
    outside the volume are dropped; the original seed must be inside.
    """
    seed = require_seed_inside(voxels_kji, ijk_to_ras, seed_ras)
    spacing = axial_slice_spacing(ijk_to_ras)
    offsets = np.arange(-neighbours, neighbours + 1)
    seeds = seed[None, :] + np.outer(offsets * spacing, [0.0, 0.0, 1.0])
    inside = np.array([is_seed_inside(voxels_kji, ijk_to_ras, candidate) for candidate in seeds])
    return seeds[inside], int(np.flatnonzero(offsets[inside] == 0)[0])


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
                    device: str = "auto", neighbour_slices: int = 0, method: str = DEFAULT_METHOD,
                    allow_unknown_bundle: bool = False) -> ExplainRequest:
    """Read and check the volume node and the seed (scene access: the event loop's thread)."""
    require_method(method)
    voxels, ijk_to_ras = volume_array_and_geometry(volume_node)
    check_volume_once(volume_node, voxels, ijk_to_ras)
    seeds, central_index = neighbour_seeds(voxels, ijk_to_ras, seed_ras, max(0, int(neighbour_slices)))
    return ExplainRequest(volume_node, voxels, ijk_to_ras, seeds, central_index, bundle_dir, device, method,
                          allow_unknown_bundle)


def worker_job(request: ExplainRequest) -> Job:
    """The request as the explanation process takes it: only the voxels its patches sample (at the
    bundle's patch size and extent), no scene node."""
    bundle_dir = resolve_bundle(request.bundle_dir)
    metadata = read_metadata(bundle_dir)
    voxels, ijk_to_ras = patch_region(request.voxels, request.ijk_to_ras, request.seeds, metadata.patch_size_px,
                                      metadata.patch_extent_mm)
    return Job(voxels, ijk_to_ras, request.seeds, str(bundle_dir), request.device, request.method,
               request.allow_unknown_bundle)


def compute(request: ExplainRequest, status: Optional[StatusCallback] = None) -> ExplanationBatch:
    """Load the bundle and explain the request's patches in this process (the scripted Logic.explain)."""
    report = status or (lambda message: None)
    report(f"Explaining {len(request.seeds)} patch(es) (loading the model bundle the first time)...")
    return run_job(Job(request.voxels, request.ijk_to_ras, request.seeds, request.bundle_dir, request.device,
                       request.method, request.allow_unknown_bundle))


def show(scene, request: ExplainRequest, batch: ExplanationBatch) -> VolumeExplanation:
    """Write the explanation into the scene's overlay node (the event loop's thread)."""
    overlay_node = update_overlay_node(scene, batch.explanations, source_volume=request.volume_node,
                                       method=request.method)
    return VolumeExplanation(batch, overlay_node, request.central_index)


def explain_volume_node(
    scene,
    volume_node,
    seed_ras: Sequence[float],
    bundle_dir: Union[str, Path, None] = None,
    device: str = "auto",
    neighbour_slices: int = 0,
    status: Optional[StatusCallback] = None,
    method: str = DEFAULT_METHOD,
    allow_unknown_bundle: bool = False,
) -> VolumeExplanation:
    """Explain the classifier's decision at ``seed_ras`` with ``method`` and show the map as the
    scene's overlay node (the same node whatever the method): ``prepare_request``, ``compute``
    and ``show`` in one call.

    Raises NoInputVolumeError, SeedOutsideVolumeError, volume_checks.NotCTError, the bundle's
    errors (BundleIntegrityError when a model file fails its checksum, UntrustedBundleError for a
    bundle the package does not ship unless ``allow_unknown_bundle``), ValueError for an unknown
    method and attribution_methods.MissingDependencyError, with specific messages, before any
    inference.
    """
    request = prepare_request(volume_node, seed_ras, bundle_dir, device, neighbour_slices, method,
                              allow_unknown_bundle)
    batch = compute(request, status)
    report = status or (lambda message: None)
    report(f"Updating the overlay ({batch.method_label})...")
    return show(scene, request, batch)
