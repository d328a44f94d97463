"""cyclegan-explain-train checks its extra before importing it."""


def test_the_launcher_knows_every_requirement_of_the_training_extra():
    import re
    import tomllib
    from pathlib import Path

    from cyclegan_explain_training.launcher import TRAINING_IMPORTS

    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    extra = [re.split(r"[<>=!~ ;\[]", requirement, maxsplit=1)[0]
             for requirement in pyproject["project"]["optional-dependencies"]["training"]]
    assert set(TRAINING_IMPORTS) == {name for name in extra if name != "cyclegan-explain"}
