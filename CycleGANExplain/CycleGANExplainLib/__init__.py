"""CycleGANExplain's pure-Python core, shared by the Slicer module, the command line and training.

Nothing here imports Qt or slicer, and nothing imports torch at import time.
Research use only; not a medical device.
"""

__version__ = "0.1.0"
