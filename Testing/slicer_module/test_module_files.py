"""The module's files agree with each other: .ui names, parameter node, CMake listing, sample checksum."""

from __future__ import annotations

import ast
import hashlib
import re
import typing
import unittest
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

MODULE_DIR = Path(__file__).resolve().parents[2] / "CycleGANExplain"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "CycleGANExplain.ui"
MODULE_SCRIPT = MODULE_DIR / "CycleGANExplain.py"


def ui_widgets() -> dict:
    """objectName -> widget element of every widget in the .ui file."""
    root = ElementTree.parse(UI_FILE).getroot()
    return {widget.get("name"): widget for widget in root.iter("widget")}


def parameter_names_in_ui() -> dict:
    """SlicerParameterName -> widget class, as parameterNodeWrapper's connectGui binds them."""
    names = {}
    for widget in ui_widgets().values():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                names[prop.find("string").text] = widget.get("class")
    return names


def test_every_ui_attribute_the_widget_uses_exists_in_the_ui_file():
    used = set(re.findall(r"self\.ui\.(\w+)", MODULE_SCRIPT.read_text()))
    assert used, "the widget should use its .ui widgets"
    missing = used - set(ui_widgets())
    assert not missing, f"CycleGANExplain.py uses self.ui.{sorted(missing)} but the .ui file has no such objectName"


def test_ui_parameter_bindings_match_the_parameter_node(module):
    """Every SlicerParameterName is a typed field; every user-set field has a widget.

    slicer-core has no parameterNodeWrapper, so the GUI binding itself is not exercised here
    (the stand-in records the class); this checks the names and the widget kinds it would bind.
    """
    hints = typing.get_type_hints(module.CycleGANExplainParameterNode, include_extras=True)
    bound = parameter_names_in_ui()
    assert set(bound) <= set(hints), f"unknown parameters in the .ui: {set(bound) - set(hints)}"
    assert set(hints) - set(bound) == {"overlayVolume", "caseTable"}  # outputs: set by the module, not by a widget
    expected_widget = {bool: "QCheckBox", int: "QSpinBox", float: "ctkSliderWidget", str: "QComboBox"}
    for name, widget_class in bound.items():
        base = typing.get_origin(hints[name]) and typing.get_args(hints[name])[0] or hints[name]
        assert widget_class == expected_widget.get(base, "qMRMLNodeComboBox"), name
    device_choice = typing.get_args(hints["device"])[1]
    assert module.CycleGANExplainParameterNode.device in device_choice.choices
    opacity_range = typing.get_args(hints["overlayOpacity"])[1]
    assert opacity_range.minimum <= module.CycleGANExplainParameterNode.overlayOpacity <= opacity_range.maximum


def cmake_listed_files() -> set:
    text = (MODULE_DIR / "CMakeLists.txt").read_text()
    variables = dict(re.findall(r"set\((MODULE_NAME) (\S+)\)", text))
    for name, value in variables.items():
        text = text.replace("${" + name + "}", value)
    listed = set()
    for block in re.findall(r"set\(MODULE_PYTHON_(?:SCRIPTS|RESOURCES)\s+(.*?)\)", text, re.S):
        listed.update(block.split())
    return listed


def test_every_script_and_resource_is_listed_in_cmake():
    from CycleGANExplainLib.model_bundle import shipped_bundles
    from CycleGANExplainLib.package_resources import sample_data_dir

    resources = MODULE_DIR / "Resources"
    shipped = {"CycleGANExplain.py"}
    shipped |= {str(path.relative_to(MODULE_DIR)) for path in (MODULE_DIR / "CycleGANExplainLib").glob("*.py")}
    for folder in (resources / "Icons", resources / "UI", sample_data_dir()):
        shipped |= {str(path.relative_to(MODULE_DIR)) for path in folder.iterdir() if path.is_file()}
    for bundle_dir in shipped_bundles():
        shipped |= {str(path.relative_to(MODULE_DIR)) for path in bundle_dir.iterdir() if path.is_file()}
    listed = cmake_listed_files()
    assert not shipped - listed, f"not listed in CycleGANExplain/CMakeLists.txt: {sorted(shipped - listed)}"
    assert not {path for path in listed if not (MODULE_DIR / path).is_file()}, "CMake lists files that do not exist"
    cmake = (MODULE_DIR / "CMakeLists.txt").read_text()
    assert "WITH_GENERIC_TESTS" in cmake and "slicerMacroBuildScriptedModule" in cmake
    testing = (MODULE_DIR / "Testing" / "Python" / "CMakeLists.txt").read_text()
    assert re.search(r"slicer_add_python_unittest\(SCRIPT \S*\$\{MODULE_NAME\}\.py\)", testing)


def test_sample_checksum_registered_with_sampledata_matches_the_file(module):
    from CycleGANExplainLib.sample_data import SAMPLES, sample_file_sha256, sample_volume_path

    for sample in SAMPLES:
        recorded = sample_file_sha256(sample)
        actual = hashlib.sha256(sample_volume_path(sample).read_bytes()).hexdigest()
        assert recorded == actual, sample


def test_help_says_research_use_describes_every_bundle_from_its_metadata_and_attributes_lidc_idri(module):
    import html

    from CycleGANExplainLib.model_bundle import default_bundle_dir, read_metadata, shipped_bundles
    from CycleGANExplainLib.notices import LIDC_IDRI_CITATIONS, LIDC_IDRI_LICENCE, RESEARCH_NOTICE

    help_text = html.unescape(module.moduleHelpText())
    assert RESEARCH_NOTICE in help_text and "not a medical device" in help_text.lower()
    for bundle_dir in shipped_bundles():
        metadata = read_metadata(bundle_dir)
        default = " (default)" if bundle_dir == default_bundle_dir() else ""
        assert f"{metadata.display_name}</b>: {module.bundleDescription(metadata)}{default}</li>" in help_text
        assert metadata.trained_on in help_text and metadata.headline_evaluation in help_text
    assert help_text.count("(default)") == 1
    assert LIDC_IDRI_LICENCE in help_text and "CC BY 3.0" in help_text
    for citation in LIDC_IDRI_CITATIONS:
        assert citation in help_text
    assert "https://doi.org/10.7937/K9/TCIA.2015.LO9QL9SX" in help_text
    # "Load sample CT" opens the real sample: its CC BY 4.0 attribution is in the help too.
    from CycleGANExplainLib.sample_data import DEFAULT_SAMPLE, sample_notice

    assert sample_notice(DEFAULT_SAMPLE) in help_text and "CC BY 4.0" in help_text


def test_help_describes_a_real_ct_bundle_from_its_metadata(module, tiny_bundle, tmp_path):
    """The training data and figures are read from metadata.json, not written into the module."""
    import json
    import shutil

    models = tmp_path / "Models"
    bundle_dir = Path(shutil.copytree(tiny_bundle, models / "lidc-voi"))
    raw = json.loads((bundle_dir / "metadata.json").read_text())
    raw.update(name="lidc-voi", trained=True, training_data={"dataset": {"source": "voi"}},
               evaluation={"split": "test", "n": 267, "classifier_auc": "0.777 [0.7, 0.8]",
                           "diameter_only_auc": "0.701 [0.6, 0.8]", "targets_missed": []})
    (bundle_dir / "metadata.json").write_text(json.dumps(raw))
    shutil.copytree(tiny_bundle, models / "lidc-phantoms")
    help_text = module.moduleHelpText(models)
    assert ("<b>lidc-voi 0.0.0 (trained)</b>: Trained on real LIDC-IDRI chest CT" in help_text
            and "classifier AUC 0.777 [0.7, 0.8]; nodule diameter alone 0.701 [0.6, 0.8]; "
                "targets missed: none. (default)</li>" in help_text)
    assert "Trained on nothing (random weights)" in help_text  # the other bundle, untrained


# What Slicer's base classes give a scripted module's classes (read from Slicer v5.8.0's
# Base/Python/slicer/ScriptedLoadableModule.py and slicer/util.py's VTKObservationMixin).
SLICER_BASE_ATTRIBUTES = {
    "CycleGANExplainWidget": {
        "parent", "moduleName", "developerMode", "layout", "resourcePath", "cleanup", "setup", "enter", "exit",
        "onReload", "onTest", "onReloadAndTest", "onEditSource", "setupDeveloperSection",
        "addObserver", "removeObserver", "removeObservers", "hasObserver", "observer", "Observations",
    },
    "CycleGANExplainLogic": {"moduleName", "isSingletonParameterNode", "getParameterNode",
                             "getAllParameterNodes", "createParameterNode"},
    "CycleGANExplainTest": {"moduleTestNames", "enableScreenshots", "screenshotScaleFactor", "delayDisplay",
                            "takeScreenshot", "setUp", "tearDown", "runTest", *dir(unittest.TestCase)},
}


@pytest.mark.parametrize("class_name", sorted(SLICER_BASE_ATTRIBUTES))
def test_every_self_attribute_a_class_reads_is_defined(class_name):
    """A method or attribute that exists nowhere fails only when Slicer runs that line; this finds it."""
    tree = ast.parse(MODULE_SCRIPT.read_text())
    [cls] = [node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == class_name]
    defined = set(SLICER_BASE_ATTRIBUTES[class_name])
    used = {}
    for node in ast.walk(cls):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            defined.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
            if isinstance(node.ctx, ast.Store):
                defined.add(node.attr)
            else:
                used.setdefault(node.attr, node.lineno)
    undefined = {name: line for name, line in used.items() if name not in defined}
    assert not undefined, f"{class_name} reads self.<name> that nothing defines (name: line): {undefined}"


def test_module_code_parses_as_python_3_9():
    """Slicer 5.6 and 5.8 bundle Python 3.9: no match statements, no parenthesised context managers..."""
    for path in [MODULE_SCRIPT, *sorted((MODULE_DIR / "CycleGANExplainLib").glob("*.py"))]:
        ast.parse(path.read_text(), filename=str(path), feature_version=(3, 9))


# What the panel shows the user: dialogs, the status bar, buttons, labels, the module's title.
USER_TEXT_CALLS = {"errorDisplay", "infoDisplay", "warningDisplay", "confirmOkCancelDisplay", "showStatusMessage",
                   "tryWithErrorDisplay", "QPushButton", "QLabel", "ask", "tell", "show_error", "show_status"}
USER_TEXT_ATTRIBUTES = {"text", "toolTip", "title", "helpText", "acknowledgementText", "windowTitle"}
TRANSLATED_FILES = [MODULE_SCRIPT, MODULE_DIR / "CycleGANExplainLib" / "explain_controller.py",
                    MODULE_DIR / "CycleGANExplainLib" / "package_installer.py"]


def untranslated_text(path: Path) -> list:
    """Literal text (a non-empty string or an f-string) given straight to a user-facing call or label,
    not through ``_()``, Slicer's translation function."""
    def literal(node) -> bool:  # words, not only numbers formatted into a string
        if isinstance(node, ast.JoinedStr):
            return any(literal(part) for part in node.values)
        return isinstance(node, ast.Constant) and isinstance(node.value, str) and re.search("[A-Za-z]", node.value)

    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            texts = [*node.args[:2], *(keyword.value for keyword in node.keywords if keyword.arg == "windowTitle")]
            if name in USER_TEXT_CALLS and any(literal(text) for text in texts):
                found.append(f"{path.name}:{node.lineno} {name}(...)")
        elif isinstance(node, ast.Assign) and literal(node.value):
            for target in node.targets:
                if isinstance(target, ast.Attribute) and target.attr in USER_TEXT_ATTRIBUTES:
                    found.append(f"{path.name}:{node.lineno} .{target.attr} = ...")
    return sorted(found, key=lambda place: int(place.split(':')[1].split()[0]))


@pytest.mark.parametrize("path", TRANSLATED_FILES, ids=lambda path: path.name)
def test_text_the_user_reads_goes_through_the_translation_function(path):
    assert untranslated_text(path) == []


def test_the_translation_check_finds_literal_text(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text('slicer.util.errorDisplay("Failed")\nlabel.text = f"{value} s"\nok = _("Fine")\n'
                      'slicer.util.infoDisplay(_("Fine"), windowTitle="Title")\nlabel.text = ""\n')
    assert untranslated_text(sample) == ["sample.py:1 errorDisplay(...)", "sample.py:2 .text = ...",
                                         "sample.py:4 infoDisplay(...)"]
