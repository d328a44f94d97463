"""`cyclegan-explain explain` against a careless or hostile user: output folders that cannot take the
run, runs that share or are interrupted in an output folder, typo seeds, mirrored spacings and
DICOM series that are not a regular grid."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from CycleGANExplainLib import cli
from CycleGANExplainLib.cli import main
from CycleGANExplainLib.volume_io import write_volume


@pytest.fixture
def ct_file(lung_volume, tmp_path):
    volume, ijk_to_ras = lung_volume
    (tmp_path / "input").mkdir()
    return write_volume(volume, ijk_to_ras, tmp_path / "input" / "ct.nrrd")


def run_cli(ct, out, bundle, *extra, seeds=("0,0,0",)):
    return main(["explain", str(ct), *[f"--seed={seed}" for seed in seeds], "--out", str(out),
                 "--bundle", str(bundle), "--allow-unknown-bundle", "--device", "cpu", *extra])


@pytest.mark.parametrize("make_out, message", [
    ("file", "is a file, not a folder"),
    ("under_file", "which is a file, not a folder"),
    ("strangers", "holds files that are not an earlier cyclegan-explain output (notes.txt)"),
    ("input_folder", "is or holds the input ct.nrrd"),
])
def test_unusable_out_exits_2_before_any_work(make_out, message, ct_file, tiny_bundle, tmp_path, capsys, monkeypatch):
    out = {"file": tmp_path / "taken", "under_file": tmp_path / "taken" / "sub" / "out",
           "strangers": tmp_path / "mine", "input_folder": ct_file.parent}[make_out]
    (tmp_path / "taken").write_text("not a folder")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("a person's notes")

    def no_reading(*_args, **_kwargs):
        raise AssertionError("the volume was read before --out was checked")

    monkeypatch.setattr(cli, "read_volume", no_reading)
    assert run_cli(ct_file, out, tiny_bundle) == 2
    assert message in capsys.readouterr().err
    assert (tmp_path / "taken").read_text() == "not a folder"
    assert (tmp_path / "mine" / "notes.txt").read_text() == "a person's notes"
    assert sorted(path.name for path in ct_file.parent.iterdir()) == ["ct.nrrd"]


def test_a_second_run_replaces_the_first_run_as_a_whole(ct_file, tiny_bundle, tmp_path):
    out = tmp_path / "out"
    assert run_cli(ct_file, out, tiny_bundle, seeds=("0,0,0", "5,5,0", "-5,0,2")) == 0
    assert run_cli(ct_file, out, tiny_bundle, "--no-figures", seeds=("1,1,1",)) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is True and len(summary["seeds"]) == 1 and summary["seeds"][0]["figure"] is None
    assert sorted(path.name for path in out.iterdir()) == ["case_summary.csv", "case_summary.md", "overlay_seed01.nrrd",
                                                          "summary.json"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["input", "out"]  # no staging folder or lock left


def test_concurrent_runs_into_one_out_never_mix(ct_file, tiny_bundle, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "CycleGANExplainLib.cli", "explain", str(ct_file), "--out", str(out),
               "--bundle", str(tiny_bundle), "--allow-unknown-bundle", "--device", "cpu"]
    runs = [subprocess.Popen(command + [f"--seed={x},0,0" for x in range(count)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
            for count in (4, 1)]
    for run in runs:
        _, error = run.communicate(timeout=300)
        assert run.returncode == 0, error.decode()
    summary = json.loads((out / "summary.json").read_text())
    count = len(summary["seeds"])
    assert count in (4, 1)
    listed = {name for seed in summary["seeds"] for name in (seed["overlay"], seed["figure"])}
    assert {path.name for path in out.iterdir()} == listed | {"summary.json", *summary["files"]}
    assert all(seed["seed_ras_mm"][0] == number for number, seed in enumerate(summary["seeds"]))


def test_interrupted_run_leaves_what_it_finished(ct_file, tiny_bundle, tmp_path, monkeypatch, capsys):
    written = []
    original = cli.ExplanationFigureWriter.write

    def interrupt_on_third(self, path, *args, **kwargs):
        if len(written) == 2:
            raise KeyboardInterrupt
        written.append(path)
        return original(self, path, *args, **kwargs)

    monkeypatch.setattr(cli.ExplanationFigureWriter, "write", interrupt_on_third)
    out = tmp_path / "out"
    assert run_cli(ct_file, out, tiny_bundle, seeds=("0,0,0", "1,0,0", "2,0,0", "3,0,0")) == 130
    assert not out.exists()
    staging = [path for path in tmp_path.iterdir() if path.name.startswith(".out.partial-")]
    assert len(staging) == 1 and str(staging[0]) in capsys.readouterr().err
    summary = json.loads((staging[0] / "summary.json").read_text())
    assert summary["complete"] is False and summary["seeds_requested"] == 4 and len(summary["seeds"]) == 2
    assert all((staging[0] / seed["figure"]).is_file() for seed in summary["seeds"])


@pytest.mark.parametrize("seed", ["1_0,0,0", "inf,0,0", "nan,0,0", "0x10,0,0", "1,,2"])
def test_typo_seeds_are_argument_errors(seed):
    with pytest.raises(Exception, match="seed must be R,A,S in millimetres"):
        cli.parse_seed(seed)
    assert cli.parse_seed("-1.5e1,+2,.5") == [-15.0, 2.0, 0.5]


def test_negative_metaimage_spacing_is_refused_not_mirrored(lung_volume, tiny_bundle, tmp_path, capsys):
    volume, ijk_to_ras = lung_volume
    mha = write_volume(volume, np.diag([1.0, 1.0, 1.0, 1.0]), tmp_path / "ct.mha")
    header = mha.read_bytes()
    assert b"ElementSpacing = 1 1 1\n" in header
    mha.write_bytes(header.replace(b"ElementSpacing = 1 1 1\n", b"ElementSpacing = -1 1 1\n", 1))
    assert run_cli(mha, tmp_path / "out", tiny_bundle) == 2
    assert "declares a voxel spacing of -1 1 1 mm; spacings must be positive" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_resampled_dicom_series_is_reported_on_the_console_and_in_the_summary(tmp_path, tiny_bundle, ct_series_writer,
                                                                               capsys):
    z = [0.0, 2.5, 5.0, 7.5, 10.0, 15.0, 20.0, 25.0, 30.0]
    volume = np.full((len(z), 64, 64), -800, np.int16)
    volume[:, 20:40, 20:40] = 30
    ct_series_writer(tmp_path / "ct", volume, 1.0, z, (-32.0, -32.0), 2.5)
    assert run_cli(tmp_path / "ct", tmp_path / "out", tiny_bundle, "--no-figures", seeds=("0,0,10",)) == 0
    assert "note: the slice spacing varies from 2.50 to 5.00 mm" in capsys.readouterr().err
    notes = json.loads((tmp_path / "out" / "summary.json").read_text())["volume_notes"]
    assert any("resampled onto a regular grid" in note for note in notes)


def test_a_header_claiming_too_many_voxels_is_refused_before_reading(tmp_path, tiny_bundle, ct_file, capsys):
    claims = tmp_path / "claims.nrrd"
    claims.write_bytes(b"NRRD0004\ntype: short\ndimension: 3\nsizes: 2048 2048 768\nencoding: raw\n"
                       b"endian: little\n\n" + b"\0" * 64)
    assert run_cli(claims, tmp_path / "out", tiny_bundle) == 2
    assert "declares 2048 x 2048 x 768 = 3,221,225,472 voxels" in capsys.readouterr().err
    assert run_cli(ct_file, tmp_path / "out", tiny_bundle, "--max-voxels", "1000") == 2
    assert "raise the limit with --max-voxels" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# Issue 23: an earlier run is known by its signed summary.json, never by file names; folders are never deleted.

@pytest.mark.parametrize("user_entries", [
    {"explanation_seed01.png/scan.dcm": "a person's file", "overlay_seed07.nrrd/notes.txt": "notes"},
    {"overlay_seed01.nrrd": "not ours", "summary.json": '{"seeds": []}'},  # named like a run, unsigned
])
def test_folders_and_files_only_named_like_outputs_are_never_deleted(user_entries, ct_file, tiny_bundle, tmp_path,
                                                                     capsys):
    out = tmp_path / "out"
    for name, text in user_entries.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text)
    assert run_cli(ct_file, out, tiny_bundle) == 2
    assert "holds files that are not an earlier cyclegan-explain output" in capsys.readouterr().err
    assert {name: (out / name).read_text() for name in user_entries} == user_entries


def test_a_user_folder_inside_an_earlier_run_keeps_the_run_from_being_replaced(ct_file, tiny_bundle, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_cli(ct_file, out, tiny_bundle, "--no-figures") == 0
    assert json.loads((out / "summary.json").read_text())["written_by"] == "cyclegan-explain"
    (out / "explanation_seed01.png").mkdir()
    (out / "explanation_seed01.png" / "kept.txt").write_text("mine")
    assert run_cli(ct_file, out, tiny_bundle) == 2
    assert "(explanation_seed01.png/)" in capsys.readouterr().err
    assert (out / "explanation_seed01.png" / "kept.txt").read_text() == "mine"
    assert (out / "overlay_seed01.nrrd").is_file()


def test_a_replacement_stopped_between_its_renames_is_put_back_by_the_next_run(ct_file, tiny_bundle, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_cli(ct_file, out, tiny_bundle, "--no-figures", seeds=("0,0,0", "1,1,1")) == 0
    earlier = (out / "summary.json").read_text()
    aside = tmp_path / ".out.replaced-x1y2"  # what a run killed after its first rename leaves
    aside.mkdir()
    os.rename(out, aside / "run")
    assert run_cli(ct_file, out, tiny_bundle, seeds=("999,0,0",)) == 2  # even a run that fails puts it back
    assert "the earlier run's output was put back from .out.replaced-x1y2" in capsys.readouterr().err
    assert (out / "summary.json").read_text() == earlier
    assert sorted(path.name for path in tmp_path.iterdir()) == ["input", "out"]


def test_a_replaced_run_left_aside_is_removed_and_said(ct_file, tiny_bundle, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_cli(ct_file, out, tiny_bundle, "--no-figures") == 0
    aside = tmp_path / ".out.replaced-x1y2"  # a run killed after both renames, before removing the old run
    aside.mkdir()
    os.rename(out, aside / "run")
    assert run_cli(ct_file, tmp_path / "elsewhere", tiny_bundle, "--no-figures") == 0
    os.rename(tmp_path / "elsewhere", out)
    assert run_cli(ct_file, out, tiny_bundle, "--no-figures") == 0
    assert "removed .out.replaced-x1y2, the output a stopped run had already replaced" in capsys.readouterr().err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["input", "out"]


def test_a_failed_second_rename_puts_the_earlier_run_back(ct_file, tiny_bundle, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert run_cli(ct_file, out, tiny_bundle, "--no-figures") == 0
    earlier = (out / "summary.json").read_text()
    real_rename = os.rename

    def failing_second_rename(source, target):
        if ".partial-" in str(source) and out.exists() is False:
            raise OSError(28, "No space left on device")
        return real_rename(source, target)

    monkeypatch.setattr("CycleGANExplainLib.output_folder.os.rename", failing_second_rename)
    assert run_cli(ct_file, out, tiny_bundle, "--no-figures", seeds=("2,2,2",)) == 2
    assert "Could not put the output at" in capsys.readouterr().err
    assert (out / "summary.json").read_text() == earlier


@pytest.mark.parametrize("where, message", [
    ("dangling", "is a link to"), ("/proc/cyclegan-out", "cannot make a folder in /proc"),
    ("/sys/cyclegan-out", "cannot make a folder in /sys"),
])
def test_out_links_and_virtual_file_systems_are_refused_before_any_work(where, message, ct_file, tiny_bundle, tmp_path,
                                                                        capsys, monkeypatch):
    out = tmp_path / "link" if where == "dangling" else Path(where)
    if where == "dangling":
        out.symlink_to(tmp_path / "gone")

    def no_reading(*_args, **_kwargs):
        raise AssertionError("the volume was read before --out was checked")

    monkeypatch.setattr(cli, "read_volume", no_reading)
    assert run_cli(ct_file, out, tiny_bundle) == 2
    assert message in capsys.readouterr().err


def test_an_out_link_to_a_folder_writes_into_that_folder(ct_file, tiny_bundle, tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert run_cli(ct_file, tmp_path / "link", tiny_bundle, "--no-figures") == 0
    assert (tmp_path / "link").is_symlink() and (tmp_path / "real" / "summary.json").is_file()


@pytest.mark.parametrize("value", ["0", "-4", "two"])
def test_batch_size_below_one_is_an_argument_error(value, ct_file, tiny_bundle, tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        run_cli(ct_file, tmp_path / "out", tiny_bundle, "--batch-size", value)
    assert exited.value.code == 2
    assert f"--batch-size: must be a whole number of at least 1, got '{value}'" in capsys.readouterr().err


def test_deeply_nested_bundle_metadata_is_a_bundle_error(ct_file, tiny_bundle, tmp_path, capsys):
    from CycleGANExplainLib.model_bundle import write_checksums

    bundle = tmp_path / "nested"
    shutil.copytree(tiny_bundle, bundle)
    (bundle / "metadata.json").write_text('{"name": ' + "[" * 100_000 + "]" * 100_000 + "}")
    write_checksums(bundle)
    assert run_cli(ct_file, tmp_path / "out", bundle) == 2
    assert "metadata.json is nested too deeply" in capsys.readouterr().err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["input", "nested"]  # no staging folder left


def test_ctrl_c_while_the_networks_run_leaves_a_partial_folder_and_exit_130(ct_file, tiny_bundle, tmp_path, capsys,
                                                                           monkeypatch):
    def interrupted(*_args, **_kwargs):  # where SIGINT lands while torch runs: explain() raises it
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "explain_through_nodules", interrupted)
    assert run_cli(ct_file, tmp_path / "out", tiny_bundle, seeds=("0,0,0", "1,1,1")) == 130
    staging = [path for path in tmp_path.iterdir() if path.name.startswith(".out.partial-")]
    assert len(staging) == 1 and str(staging[0]) in capsys.readouterr().err
    summary = json.loads((staging[0] / "summary.json").read_text())
    assert summary["complete"] is False and summary["seeds"] == [] and summary["seeds_requested"] == 2


def test_bundles_into_a_closed_pipe_is_quiet():
    process = subprocess.Popen([sys.executable, "-m", "CycleGANExplainLib.cli", "bundles"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    process.stdout.close()  # as `| head` does once it has its lines
    error = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141
    assert "Traceback" not in error and "BrokenPipeError" not in error


def test_paths_that_are_not_utf8_are_refused_not_an_abort(ct_file, tiny_bundle, tmp_path):
    """SimpleITK aborted the process (exit 134) on such a name; run as a process to see that."""
    odd = os.fsencode(tmp_path) + b"/ct\xff.nrrd"
    with open(odd, "wb") as stream:
        stream.write(ct_file.read_bytes())
    command = [sys.executable, "-m", "CycleGANExplainLib.cli", "explain", "--seed=0,0,0", "--bundle",
               str(tiny_bundle), "--allow-unknown-bundle", "--device", "cpu"]
    for volume, out, problem in ((odd, os.fsencode(tmp_path / "out"), b"is not valid UTF-8, which the image reader"),
                                 (os.fsencode(ct_file), os.fsencode(tmp_path) + b"/out\xff", b"is not valid UTF-8, "
                                                                                             b"which the image writer")):
        done = subprocess.run(command + [volume, b"--out", out], capture_output=True, timeout=300,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert done.returncode == 2 and problem in done.stderr and b"Traceback" not in done.stderr, done.stderr
    assert sorted(os.listdir(os.fsencode(tmp_path))) == [b"ct\xff.nrrd", b"input"]
