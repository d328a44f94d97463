"""Every config the scripts and README name must load: an unknown or misspelt key is refused by
load_config, and a config that fails here would fail only after hours of training elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from cyclegan_explain_training.config import load_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "training" / "configs").glob("*.json"))


def test_the_configs_folder_is_found():
    assert any(path.name == "lidc-voi-v2-transfer.json" for path in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=[path.stem for path in CONFIGS])
def test_each_committed_config_loads(path):
    config = load_config(path)
    assert config.cyclegan.activation_view_shift_px >= 0


def test_a_misspelt_key_is_refused(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"cyclegan": {"activation_view_shift": 2}}')
    with pytest.raises(ValueError, match="activation_view_shift"):
        load_config(path)
