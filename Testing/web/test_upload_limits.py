"""What an upload may cost the server (issue 23, item 15): --max-upload-mb counted as the browser's
messages arrive (what arrived is let go once over the limit), a .zip's entries counted from its
central directory before anything is extracted, and a multi-frame DICOM's frames counted against
--max-voxels from its header."""

from __future__ import annotations

import asyncio
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from trame.app import get_server

from cyclegan_explain_web import viewer as viewer_module
from cyclegan_explain_web.volume_upload import UploadLimits, read_uploaded_volume, write_uploaded_files

from CycleGANExplainLib.volume_io import UnreadableVolumeError, read_volume, write_volume

LIMIT = 1_000_000


@pytest.fixture(scope="module")
def viewer():
    app = viewer_module.ExplainViewer(server=get_server("upload-limits-test", client_type="vue3"), device="cpu",
                                      limits=UploadLimits(max_upload_bytes=LIMIT))
    app.state.ready()
    return app


def upload_messages(viewer, messages) -> None:
    """What trame-slicer's page script does: one trigger per message, then an empty one at the end;
    then wait for the upload's reading to finish."""
    async def scenario():
        button = viewer.upload_buttons[0]
        for files in messages:
            await button.load_chunk(files)
            if button.refused is not None:
                assert button.files == []  # let go as soon as the total is over the limit
        await button.load_chunk([])
        await asyncio.sleep(0.05)
        while viewer.state.busy:
            await asyncio.sleep(0.05)

    asyncio.run(scenario())


def test_an_upload_over_the_limit_is_let_go_as_its_messages_arrive(viewer, tmp_path, lung_volume):
    part = {"name": "big.nrrd", "content": b"\0" * 600_000}
    upload_messages(viewer, [[part], [part], [part]])
    assert "The upload is 1 MB, more than the limit of 1 MB (cyclegan-explain-web --max-upload-mb)" \
        in viewer.state.error_text
    assert viewer.volume_node is None and viewer.upload_buttons[0].files == []

    volume, ijk_to_ras = lung_volume  # the next upload starts afresh, and one under the limit is read
    source = write_volume(volume, ijk_to_ras, tmp_path / "ct.nrrd")
    upload_messages(viewer, [[{"name": "ct.nrrd", "content": source.read_bytes()}]])
    assert viewer.state.error_text == "" and viewer.volume_node is not None


def test_a_zip_with_too_many_entries_is_refused_before_extraction(tmp_path):
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for number in range(30):
            zipped.writestr(f"empty{number:02d}.dcm", b"")
    folder = tmp_path / "upload"
    folder.mkdir()
    write_uploaded_files([{"name": "series.zip", "content": archive.read_bytes()}], folder)
    with pytest.raises(UnreadableVolumeError, match="series.zip holds 30 entries, more than the limit of 20"):
        read_uploaded_volume(folder, UploadLimits(max_zip_members=20))
    assert not (folder / "unzipped").exists() or not any((folder / "unzipped").iterdir())


def test_a_multi_frame_dicom_counts_its_frames_against_max_voxels(tmp_path):
    """One DICOM file of 40 frames of 64 x 64: 163,840 voxels, though the folder holds one file."""
    image = sitk.GetImageFromArray(np.full((40, 64, 64), -800, np.int16))
    image.SetMetaData("0008|0060", "CT")
    folder = tmp_path / "multiframe"
    folder.mkdir()
    sitk.WriteImage(image, str(folder / "frames.dcm"))
    with pytest.raises(UnreadableVolumeError, match=r"declares 64 x 64 x 40 = 163,840 voxels, more than the limit "
                                                    r"of 100,000"):
        read_volume(folder, max_voxels=100_000)
