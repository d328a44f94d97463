"""The package's layers import one way (docs/architecture.md, "Layers"); nothing imports in a cycle.

Every import is read from the source (top level and inside functions alike), so a lazy import
that goes the wrong way fails too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
LIBRARY = REPO_ROOT / "CycleGANExplain" / "CycleGANExplainLib"

# Lowest first. Each module may import only from its own layer or one below.
LAYERS = {
    "core": ["__init__", "translation", "package_resources", "sample_data", "patch_sampling", "intensity", "bundle_trust",
             "model_bundle", "volume_headers", "volume_io", "dicom_series", "volume_checks", "networks", "inference_threads", "triton_guard",
             "inference", "output_folder", "seed_files"],
    "methods": ["attribution_methods"],
    "explain": ["explanation", "nodule_stack", "explain_worker"],
    "presentation": ["overlay", "notices", "formatting", "caveats", "case_summary", "explanation_figure", "dicom_results"],
    "mrml": ["mrml_overlay", "mrml_probability_plot", "mrml_explain", "mrml_case"],
    "front ends": ["cli", "parameter_gui", "package_installer", "explain_controller", "worker_client"],
}
LAYER_OF = {module: rank for rank, modules in enumerate(LAYERS.values()) for module in modules}
FRONT_END_PACKAGES = ("cyclegan_explain_web", "cyclegan_explain_training")


def library_imports(path: Path) -> set:
    """The CycleGANExplainLib modules (and other front-end packages) that ``path`` imports."""
    imported = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:  # from .x import y / from . import y
                names = [node.module] if node.module else [alias.name for alias in node.names]
                imported.update(name.split(".")[0] for name in names)
            elif node.module and node.module.split(".")[0] in ("CycleGANExplainLib", *FRONT_END_PACKAGES):
                parts = node.module.split(".")
                imported.add(parts[1] if parts[0] == "CycleGANExplainLib" and len(parts) > 1 else parts[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in FRONT_END_PACKAGES:
                    imported.add(alias.name.split(".")[0])
    return imported


def test_every_module_has_a_layer():
    modules = {path.stem for path in LIBRARY.glob("*.py")}
    assert modules == set(LAYER_OF), f"place new modules in LAYERS: {sorted(modules ^ set(LAYER_OF))}"


@pytest.mark.parametrize("module", sorted(LAYER_OF))
def test_imports_go_down_the_layers_only(module):
    imports = library_imports(LIBRARY / f"{module}.py")
    front_ends = imports & set(FRONT_END_PACKAGES)
    assert not front_ends, f"{module} imports the front end(s) {sorted(front_ends)}"
    upward = {name for name in imports if name in LAYER_OF and LAYER_OF[name] > LAYER_OF[module]}
    assert not upward, f"{module} ({list(LAYERS)[LAYER_OF[module]]}) imports from a higher layer: {sorted(upward)}"


def test_no_import_cycles():
    graph = {module: library_imports(LIBRARY / f"{module}.py") & set(LAYER_OF) - {"__init__"} for module in LAYER_OF}
    visiting, done = [], set()

    def visit(module):
        if module in visiting:
            pytest.fail("import cycle: " + " -> ".join(visiting[visiting.index(module):] + [module]))
        if module in done:
            return
        visiting.append(module)
        for name in sorted(graph[module]):
            visit(name)
        visiting.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


def test_the_check_sees_a_wrong_way_import(tmp_path):
    """The reader finds relative, absolute, lazy and front-end imports."""
    source = tmp_path / "probe.py"
    source.write_text("from . import overlay\nfrom .cli import main\n"
                      "def f():\n    from CycleGANExplainLib.mrml_overlay import x\n    import cyclegan_explain_web.viewer\n")
    assert library_imports(source) == {"overlay", "cli", "mrml_overlay", "cyclegan_explain_web"}
