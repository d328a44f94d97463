"""`cyclegan-explain-web` refuses what it cannot start with before building the viewer: exit 2 and
one message, no traceback (issue 23, item 19)."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest

from cyclegan_explain_web.cli import main
from CycleGANExplainLib.model_bundle import write_checksums


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:") or "error:" in line]
    assert len(lines) == 1, err
    return lines[0]


def test_a_port_in_use_is_named(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["--port", str(port)]) == 2
    assert f"port {port} on 127.0.0.1 is already in use; choose another with --port" in one_error_line(capsys)


@pytest.mark.parametrize("port", ["70000", "-1", "eighty"])
def test_a_port_that_is_no_port_is_refused(port, capsys):
    with pytest.raises(SystemExit) as caught:
        main(["--port", port])
    assert caught.value.code == 2
    assert "is not a port number (0 to 65535)" in one_error_line(capsys)


def test_a_host_that_is_not_this_machine_is_named(capsys):
    assert main(["--host", "no-such-host.invalid"]) == 2
    assert "cannot listen on 'no-such-host.invalid'" in one_error_line(capsys)


def test_an_allowed_bundle_with_invalid_metadata_is_refused_at_start(tiny_bundle, tmp_path, capsys):
    bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
    raw = json.loads((bundle / "metadata.json").read_text())
    raw["patch"]["size_px"] = -4
    (bundle / "metadata.json").write_text(json.dumps(raw))
    write_checksums(bundle)
    assert main(["--bundle", str(bundle), "--allow-unknown-bundle", "--port", "0"]) == 2
    assert "patch.size_px is -4" in one_error_line(capsys)
