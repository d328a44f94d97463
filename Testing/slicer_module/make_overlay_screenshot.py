"""Write Resources/Screenshots/overlay_axial.png: the axial slice view through the sample's nodule.

The image is what Slicer's axial (Red) slice view composites (vtkMRMLSliceLogic), made on a bare
slicer-core scene: the default sample CT (the real one "Load sample CT" opens) in a lung window
with the relevance overlay at opacity 0.6, seed on its documented tumour T1.
Run: .venv/bin/python Testing/slicer_module/make_overlay_screenshot.py
"""

from __future__ import annotations

import sys
from pathlib import Path
from CycleGANExplainLib.sample_data import DEFAULT_SAMPLE, sample_volume_path

HERE = Path(__file__).resolve().parent
OUTPUT = HERE.parents[1] / "Resources" / "Screenshots" / "overlay_axial.png"


def main() -> int:
    import matplotlib.pyplot as plt

    sys.path.insert(0, str(HERE))
    from conftest import MODULE_DIR, SceneApp, _install_slicer_application_stand_in

    _install_slicer_application_stand_in()
    sys.path.insert(0, str(MODULE_DIR))
    import CycleGANExplain as module

    app = SceneApp()
    volume = app.load_volume(sample_volume_path(DEFAULT_SAMPLE), DEFAULT_SAMPLE)
    app.set_lung_window(volume)
    seed = module.sampleNoduleRAS(DEFAULT_SAMPLE)
    logic = module.CycleGANExplainLogic()
    result = logic.explain(volume, seed, device="cpu")
    logic.showOverlay(result.overlay_node, volume, opacity=0.6)
    # Slicer's axial view as Slicer sets it: screen right is the patient's left (radiological). The
    # test scene's slice node starts as an unoriented reformat (screen right = patient's right).
    slice_node = app.red_logic.GetSliceNode()
    slice_node.GetSliceToRAS().DeepCopy((-1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1))  # Slicer's Axial preset
    slice_node.UpdateMatrices()
    image, _ = app.composite_axial_slice(seed, field_of_view_mm=90.0, size_px=512)
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    plt.imsave(OUTPUT, image[::-1, :, :3])  # VTK's row 0 is the bottom
    print(f"Wrote {OUTPUT} ({logic.bundleMetadata().display_name}); warnings: {result.batch.warnings}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
