"""The notices every front-end shows: research use, and the LIDC-IDRI data attribution.

One place for this text: the command line, the web viewer and the Slicer module's help all read
it from here. LIDC-IDRI is published under CC BY 3.0, which requires attribution wherever models
trained on it are shipped.
"""

from __future__ import annotations

from typing import Tuple

RESEARCH_NOTICE = "Research use only. Not a medical device."
NOT_CLEARED = "Not cleared or approved for diagnosis or any clinical decision."
# What each bundle's metadata.json says of its use (written by training's export).
INTENDED_USE = ("Research use only. Not a medical device: not cleared or approved for diagnosis or any clinical "
                "decision.")

LIDC_IDRI_LICENCE = (
    "The model bundles were trained with data from the LIDC-IDRI collection of The Cancer Imaging "
    "Archive (TCIA), used under the Creative Commons Attribution 3.0 licence (CC BY 3.0, "
    "https://creativecommons.org/licenses/by/3.0/)."
)

LIDC_IDRI_CITATIONS: Tuple[str, ...] = (
    "Armato III SG, McLennan G, Bidaut L, et al. (2015). Data From LIDC-IDRI. The Cancer Imaging Archive. "
    "https://doi.org/10.7937/K9/TCIA.2015.LO9QL9SX",
    "Armato III SG, et al. The Lung Image Database Consortium (LIDC) and Image Database Resource Initiative "
    "(IDRI): a completed reference database of lung nodules on CT scans. Med Phys 38(2), 915\u2013931 (2011)",
    "Clark K, et al. The Cancer Imaging Archive (TCIA). J Digit Imaging 26(6), 1045\u20131057 (2013)",
)


def data_attribution_text(separator: str = "\n") -> str:
    """The licence sentence followed by the citations, one per ``separator``."""
    return separator.join([LIDC_IDRI_LICENCE, "Please cite:", *(f"- {citation}" for citation in LIDC_IDRI_CITATIONS)])
