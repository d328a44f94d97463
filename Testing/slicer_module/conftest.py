"""Fixtures for testing the Slicer module on a real MRML scene without the Slicer application.

slicer-core provides the real MRML scene, volumes, markups, colour and slice logics (no Qt).
What it lacks is the Qt application layer that CycleGANExplain.py imports at module level:
``qt``, ``slicer.ScriptedLoadableModule``, ``slicer.parameterNodeWrapper`` and ``slicer.i18n``.
The STAND-IN below provides exactly the names that importing the module and running its Logic,
its ExplainController and self-test need, and nothing more. It is not Slicer: the Widget cannot
run here (no widgets, no parameter-node GUI binding); the stand-in's parameter node keeps its
values as attributes, not in the MRML node.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
import types
import unittest
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO_ROOT / "CycleGANExplain"


# --- the stand-in for Slicer's Qt application layer --------------------------------------------


def _install_slicer_application_stand_in() -> None:
    """Register minimal ``qt``, ``slicer.ScriptedLoadableModule`` and ``slicer.parameterNodeWrapper``."""
    import slicer

    if "slicer.ScriptedLoadableModule" in sys.modules:
        return

    sys.modules.setdefault("qt", types.ModuleType("qt"))  # only imported; the Widget cannot run here

    scripted = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModule:
        def __init__(self, parent) -> None:
            self.parent = parent

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None) -> None:
            self.parent = parent

    class ScriptedLoadableModuleLogic:
        """As Slicer's: one vtkMRMLScriptedModuleNode per module, tagged with the module's name."""

        def __init__(self, parent=None) -> None:
            self.moduleName = type(self).__name__.removesuffix("Logic")

        def getParameterNode(self):
            scene = slicer.mrmlScene
            node = scene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
            if node is None:
                node = slicer.vtkMRMLScriptedModuleNode()
                node.SetSingletonTag(self.moduleName)
                node.SetName(scene.GenerateUniqueName(self.moduleName))
                node.SetAttribute("ModuleName", self.moduleName)
                node = scene.AddNode(node)
            return node

    class ScriptedLoadableModuleTest(unittest.TestCase):
        def delayDisplay(self, message: str, msec: int = 1000) -> None:
            print(message)

    for cls in (ScriptedLoadableModule, ScriptedLoadableModuleWidget, ScriptedLoadableModuleLogic,
                ScriptedLoadableModuleTest):
        setattr(scripted, cls.__name__, cls)
    scripted.__all__ = [cls.__name__ for cls in (ScriptedLoadableModule, ScriptedLoadableModuleWidget,
                                                 ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest)]

    wrapper = types.ModuleType("slicer.parameterNodeWrapper")

    @dataclasses.dataclass
    class WithinRange:
        minimum: float
        maximum: float

    @dataclasses.dataclass
    class Choice:
        choices: tuple

    def parameterNodeWrapper(cls):
        """An instance holds the annotated parameters as plain attributes, starting at their defaults
        (Slicer's wrapper stores them in the node, which is what saves them with the scene)."""
        def __init__(self, node) -> None:
            self.parameterNode = node
            for name in cls.__annotations__:
                setattr(self, name, getattr(cls, name, None))

        cls.__init__ = __init__
        cls.isStandInParameterNodeWrapper = True
        return cls

    wrapper.WithinRange, wrapper.Choice, wrapper.parameterNodeWrapper = WithinRange, Choice, parameterNodeWrapper

    i18n = types.ModuleType("slicer.i18n")  # Slicer's translation needs its Qt application: text as written
    i18n.tr = lambda text: text
    i18n.translate = lambda context, text: text

    sys.modules["slicer.i18n"] = i18n
    slicer.i18n = i18n
    sys.modules["slicer.ScriptedLoadableModule"] = scripted
    sys.modules["slicer.parameterNodeWrapper"] = wrapper
    slicer.ScriptedLoadableModule = scripted
    slicer.parameterNodeWrapper = wrapper


@pytest.fixture(scope="session")
def module():
    """The CycleGANExplain.py module, imported on top of the stand-in."""
    _install_slicer_application_stand_in()
    if str(MODULE_DIR) not in sys.path:
        sys.path.insert(0, str(MODULE_DIR))
    return importlib.import_module("CycleGANExplain")


# --- a real MRML scene, set up as trame-slicer's SlicerApp does --------------------------------


class SceneApp:
    """The scene and the logics a Slicer application would own."""

    def __init__(self) -> None:
        import slicer
        import vtk

        self.scene = slicer.vtkMRMLScene()
        self.app_logic = slicer.vtkSlicerApplicationLogic()
        self.app_logic.SetMRMLScene(self.scene)
        self.app_logic.GetColorLogic().SetMRMLScene(self.scene)
        self.app_logic.GetColorLogic().AddDefaultColorNodes()
        self.app_logic.SetSliceLogics(vtk.vtkCollection())
        self.app_logic.SetViewLogics(vtk.vtkCollection())
        self.colour_logic = slicer.vtkMRMLColorLogic()
        self.colour_logic.SetMRMLApplicationLogic(self.app_logic)
        self.colour_logic.SetMRMLScene(self.scene)
        self.app_logic.SetModuleLogic("Colors", self.colour_logic)
        self.volumes_logic = slicer.vtkSlicerVolumesLogic()
        self.volumes_logic.SetMRMLScene(self.scene)
        self.volumes_logic.SetMRMLApplicationLogic(self.app_logic)
        self.app_logic.SetModuleLogic("Volumes", self.volumes_logic)
        self.markups_logic = slicer.vtkSlicerMarkupsLogic()
        self.markups_logic.SetMRMLScene(self.scene)
        self.markups_logic.SetMRMLApplicationLogic(self.app_logic)
        self.app_logic.SetModuleLogic("Markups", self.markups_logic)
        slicer.mrmlScene = self.scene
        # The axial ("Red") view; its slice logic composites images without OpenGL.
        self.red_logic = slicer.vtkMRMLSliceLogic()
        self.red_logic.SetMRMLScene(self.scene)
        self.red_logic.SetMRMLApplicationLogic(self.app_logic)
        self.red_logic.AddSliceNode("Red")

    def load_volume(self, path: Path, name: str = "CT"):
        node = self.volumes_logic.AddArchetypeVolume(str(path), name, 0)
        assert node is not None, f"volumes logic could not load {path}"
        return node

    def composite_axial_slice(self, centre_ras, field_of_view_mm: float = 60.0, size_px: int = 256):
        """The Red view's composited RGBA image [y, x, 4] centred on ``centre_ras``, and its XY-to-RAS.

        The image comes from vtkMRMLSliceLogic.GetImageDataConnection (what Slicer's slice view
        renders), row 0 at the bottom as in VTK.
        """
        import slicer
        from vtk.util.numpy_support import vtk_to_numpy

        slice_node = self.red_logic.GetSliceNode()
        slice_node.SetDimensions(size_px, size_px, 1)
        slice_node.SetFieldOfView(field_of_view_mm, field_of_view_mm, 1.0)
        slicer.vtkMRMLSliceNode.JumpAllSlices(
            self.scene, *map(float, centre_ras), slicer.vtkMRMLSliceNode.CenteredJumpSlice
        )
        producer = self.red_logic.GetImageDataConnection().GetProducer()
        producer.Update()
        image = producer.GetOutputDataObject(0)
        width, height, _ = image.GetDimensions()
        pixels = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, -1).copy()
        return pixels, slicer.util.arrayFromVTKMatrix(slice_node.GetXYToRAS())

    @staticmethod
    def ras_to_slice_xy(xy_to_ras: np.ndarray, ras) -> np.ndarray:
        """Pixel (x, y) of the slice image nearest to a RAS point (assumed on the slice plane)."""
        xyz = np.linalg.solve(xy_to_ras, np.append(np.asarray(ras, dtype=float), 1.0))
        return np.rint(xyz[:2]).astype(int)

    @staticmethod
    def set_lung_window(volume_node) -> None:
        """Lung window (W 1500, L -600) so that the background looks like a chest CT."""
        display = volume_node.GetScalarVolumeDisplayNode()
        display.AutoWindowLevelOff()
        display.SetWindowLevel(1500.0, -600.0)

    def seed_node(self, ras) -> object:
        """A real markups point list with one control point at ``ras``."""
        node = self.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "seed")
        node.AddControlPoint(*map(float, ras))
        return node


@pytest.fixture
def scene_app():
    app = SceneApp()
    yield app
    app.scene.Clear(1)


# --- a small synthetic chest CT ----------------------------------------------------------------

NODULE_LPS = (-12.0, 8.0, 22.0)
"""Nodule centre in LPS mm (SimpleITK's frame); RAS flips the first two."""
NODULE_RADIUS_MM = 6.0


def write_synthetic_ct(path: Path) -> Path:
    """NRRD of a body at soft-tissue HU with air-filled lungs and one bright spherical nodule."""
    import SimpleITK as sitk

    shape_kji = (24, 96, 96)
    spacing_ijk = (0.8, 0.8, 2.0)
    origin_lps = (-50.0, -40.0, 0.0)
    k, j, i = np.meshgrid(*(np.arange(n) for n in shape_kji), indexing="ij")
    lps = [origin_lps[axis] + (i, j, k)[axis] * spacing_ijk[axis] for axis in range(3)]
    volume = np.full(shape_kji, 40.0)
    volume[(lps[0] > -45) & (lps[0] < -2)] = -850.0  # a lung either side of the mediastinum
    volume[(lps[0] > 2) & (lps[0] < 25)] = -850.0
    distance = np.sqrt(sum((lps[axis] - NODULE_LPS[axis]) ** 2 for axis in range(3)))
    volume[distance < NODULE_RADIUS_MM] = 60.0
    volume[:, :4, :] = -1000.0  # air outside the body
    image = sitk.GetImageFromArray(volume.astype(np.int16))
    image.SetSpacing(spacing_ijk)
    image.SetOrigin(origin_lps)
    sitk.WriteImage(image, str(path))
    return path


@pytest.fixture(scope="session")
def synthetic_ct(tmp_path_factory) -> Path:
    return write_synthetic_ct(tmp_path_factory.mktemp("ct") / "synthetic_chest.nrrd")


@pytest.fixture(scope="session")
def nodule_ras() -> np.ndarray:
    return np.array([-NODULE_LPS[0], -NODULE_LPS[1], NODULE_LPS[2]])

