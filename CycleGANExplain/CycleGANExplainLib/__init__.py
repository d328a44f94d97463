"""CycleGANExplain's pure-Python core, shared by the Slicer module, the command line and training.

Nothing here imports Qt or slicer, and nothing imports torch at import time.
Research use only; not a medical device.
"""

import sys

__version__ = "0.1.0"


def forget_loaded_modules() -> None:
    """Forget this package's imported modules, so that the next import reads their files again
    (the Slicer module's Reload; Slicer re-imports only the module file itself)."""
    for name in [name for name in sys.modules if name == __name__ or name.startswith(__name__ + ".")]:
        del sys.modules[name]
