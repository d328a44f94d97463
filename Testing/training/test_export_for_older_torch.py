"""The exported generators are traces: they hold only the ops the networks run, so that the bundle
loads on the older torch of some Slicer platforms, and they compute what the networks compute."""

from __future__ import annotations

import pytest
import torch

from CycleGANExplainLib.networks import UNetGenerator
from cyclegan_explain_training.export import _torchscript, export_untrained_bundle


def _all_code(module: torch.jit.ScriptModule) -> str:
    return "\n".join([module.code, *(child.code for _, child in module.named_modules()
                                     if isinstance(child, torch.jit.ScriptModule) and hasattr(child, "code"))])


@pytest.mark.parametrize("residual", [True, False])
def test_a_traced_generator_computes_what_the_network_does_without_other_interpolation_modes(residual, tmp_path):
    torch.manual_seed(0)
    generator = UNetGenerator(4, residual=residual).eval()
    traced = _torchscript("generator_pos", generator, 64)
    traced.save(str(tmp_path / "generator.pt"))
    loaded = torch.jit.load(str(tmp_path / "generator.pt"))
    for batch_size in (1, 3, 8):
        x = torch.rand(batch_size, 1, 64, 64) * 2 - 1
        with torch.no_grad():
            assert torch.allclose(loaded(x), generator(x), atol=1e-6)
    code = _all_code(loaded)
    assert "upsample_nearest" in code
    assert "lanczos" not in code and "bicubic" not in code and "bilinear" not in code
    scripted = torch.jit.script(generator)  # what the bundles held before: every mode, lanczos included
    assert "lanczos" in str(scripted.inlined_graph) or "lanczos" in _all_code(scripted)


def test_the_exported_bundles_generators_are_traces_and_its_classifier_is_scripted(tmp_path):
    bundle = export_untrained_bundle(tmp_path / "bundle", classifier_width=4, generator_width=4)
    for name in ("generator_pos.pt", "generator_neg.pt"):
        assert "lanczos" not in _all_code(torch.jit.load(str(bundle / name)))
    classifier = torch.jit.load(str(bundle / "classifier.pt"))
    assert classifier(torch.zeros(2, 1, 64, 64)).shape == (2, 2)


def test_a_scripted_bundle_retraced_computes_the_same_and_says_so(tmp_path):
    """Bundles scripted by an earlier export (every interpolation mode inside) are re-exported by tracing."""
    import json

    from CycleGANExplainLib.model_bundle import load_bundle, write_checksums
    from cyclegan_explain_training.export import retraced_bundle

    original = export_untrained_bundle(tmp_path / "original", classifier_width=4, generator_width=4)
    torch.manual_seed(3)
    for name in ("generator_pos", "generator_neg"):  # as the earlier export wrote them: scripted
        torch.jit.script(UNetGenerator(4).eval()).save(str(original / f"{name}.pt"))
    write_checksums(original)
    assert "lanczos" in str(torch.jit.load(str(original / "generator_pos.pt")).inlined_graph)

    copy = retraced_bundle(original, tmp_path / "copy", "0.0.1", allow_unknown_bundle=True)
    for name in ("generator_pos.pt", "generator_neg.pt"):
        assert "lanczos" not in str(torch.jit.load(str(copy / name)).inlined_graph)
    before, after = load_bundle(original, "cpu", allow_unknown=True), load_bundle(copy, "cpu", allow_unknown=True)
    x = torch.rand(3, 1, 64, 64) * 2 - 1
    with torch.no_grad():
        for role in ("classifier", "generator_pos", "generator_neg"):
            assert torch.allclose(getattr(after, role)(x), getattr(before, role)(x), atol=1e-6)
    metadata = json.loads((copy / "metadata.json").read_text())
    assert metadata["version"] == "0.0.1" and "re-exported by tracing" in metadata["export_history"][-1]
