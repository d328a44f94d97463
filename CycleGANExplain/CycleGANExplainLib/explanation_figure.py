"""A PNG figure of one explanation: x, G-(x), G+(x) and R over x, with the classifier's outputs.

matplotlib is imported inside the functions: the Slicer module never draws these figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from .overlay import BENIGN_RGB, MALIGNANT_RGB, blend_over_grey, relevance_to_rgba, symmetric_limit

RELEVANCE_TITLE = "R = G\u207a(x) \u2212 G\u207b(x)"


def explanation_panels(
    x: np.ndarray,
    g_neg: np.ndarray,
    g_pos: np.ndarray,
    relevance: np.ndarray,
    p_x: float,
    p_neg: float,
    p_pos: float,
    limit: float,
    label: Optional[str] = None,
    relevance_title: str = RELEVANCE_TITLE,
) -> List[Tuple[np.ndarray, str]]:
    """The four panels' images (grey levels in [0, 1], or RGB) and titles."""
    to_grey = lambda image: (np.asarray(image) + 1.0) / 2.0  # noqa: E731 - normalised [-1, 1] to [0, 1]
    return [
        (to_grey(x), f"x{f' ({label})' if label else ''}\np(malignant) = {p_x:.2f}"),
        (to_grey(g_neg), f"G\u207b(x), towards benign\np = {p_neg:.2f}"),
        (to_grey(g_pos), f"G\u207a(x), towards malignant\np = {p_pos:.2f}"),
        (blend_over_grey(to_grey(x), relevance_to_rgba(relevance, limit)), f"{relevance_title}\n\u00b1{limit:.2g}"),
    ]


def draw_explanation_row(
    axes: Sequence["object"],
    x: np.ndarray,
    g_neg: np.ndarray,
    g_pos: np.ndarray,
    relevance: np.ndarray,
    p_x: float,
    p_neg: float,
    p_pos: float,
    limit: Optional[float] = None,
    label: Optional[str] = None,
    fontsize: float = 9,
    relevance_title: str = RELEVANCE_TITLE,
) -> float:
    """Draw the four panels into four matplotlib axes; returns the relevance display limit used.

    ``limit`` fixes the symmetric colour range (one range for a whole figure); ``label`` names the
    true class in the first panel's title; ``relevance_title`` names the map (the method).
    """
    limit = symmetric_limit(relevance) if limit is None else limit
    panels = explanation_panels(x, g_neg, g_pos, relevance, p_x, p_neg, p_pos, limit, label, relevance_title)
    for axis, (image, title) in zip(axes, panels):
        axis.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        axis.set_title(title, fontsize=fontsize)
        axis.set_xticks([])
        axis.set_yticks([])
    return limit


class ExplanationFigureWriter:
    """Writes four-panel figures (x, G-(x), G+(x), R over x) with a colour legend and the
    research-use notice, one PNG per explanation.

    The matplotlib figure is laid out once and only its images and titles change from one
    explanation to the next: laying a figure out costs far more than drawing it, and a call with
    a thousand seeds must not spend minutes on it. An unsigned map (``signed=False``: saliency,
    Grad-CAM) gets a one-entry legend saying that red is magnitude only, so that the absence of
    blue is not read as the absence of benign evidence.
    """

    def __init__(self, relevance_title: str = RELEVANCE_TITLE, signed: bool = True) -> None:
        self.relevance_title = relevance_title
        self.signed = signed
        self._figure = None
        self._images: list = []
        self._titles: list = []
        self._heading = None

    def _lay_out(self, explanation: tuple, heading: str) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch as LegendPatch

        # A bare Figure (not pyplot): nothing global, so writers in several threads do not meet.
        figure = Figure(figsize=(10, 3.3), dpi=100)
        FigureCanvasAgg(figure)
        axes = figure.subplots(1, 4)
        draw_explanation_row(axes, *explanation, relevance_title=self.relevance_title)
        self._images = [axis.images[0] for axis in axes]
        self._titles = [axis.title for axis in axes]
        self._heading = figure.suptitle(heading, fontsize=10)
        if self.signed:
            handles = [
                LegendPatch(color=MALIGNANT_RGB, label="red: malignancy-indicating (R > 0)"),
                LegendPatch(color=BENIGN_RGB, label="blue: benign-indicating (R < 0)"),
            ]
        else:
            handles = [LegendPatch(color=MALIGNANT_RGB, label="red: relevance magnitude (unsigned map: no "
                                                              "benign/malignant direction, never blue)")]
        figure.legend(handles=handles, loc="lower center", ncol=2, fontsize=8, frameon=False)
        figure.text(0.99, 0.01, "Research use only. Not a medical device.", ha="right", fontsize=7, color="0.4")
        # Fixed margins: tight_layout measures every text and costs more than drawing the figure.
        figure.subplots_adjust(left=0.01, right=0.99, bottom=0.12, top=0.78, wspace=0.06)
        self._figure = figure

    def write(self, path: Union[str, Path], x: np.ndarray, g_neg: np.ndarray, g_pos: np.ndarray,
              relevance: np.ndarray, p_x: float, p_neg: float, p_pos: float, heading: str,
              limit: Optional[float] = None) -> Path:
        """One figure; ``limit`` fixes the colour range (default: overlay.symmetric_limit of the map)."""
        limit = symmetric_limit(relevance) if limit is None else limit
        explanation = (x, g_neg, g_pos, relevance, p_x, p_neg, p_pos, limit)
        if self._figure is None:
            self._lay_out(explanation, heading)
        else:
            panels = explanation_panels(*explanation, relevance_title=self.relevance_title)
            for image, text, (panel, title) in zip(self._images, self._titles, panels):
                image.set_data(panel)
                text.set_text(title)
            self._heading.set_text(heading)
        from PIL import Image

        path = Path(path)
        canvas = self._figure.canvas
        canvas.draw()
        # PIL straight from the canvas: savefig would draw the figure twice, and zlib's fastest
        # level is a fifth of the cost of its default for these small figures.
        Image.fromarray(np.asarray(canvas.buffer_rgba())).save(path, format="PNG", compress_level=1)
        return path


def save_explanation_figure(
    path: Union[str, Path],
    x: np.ndarray,
    g_neg: np.ndarray,
    g_pos: np.ndarray,
    relevance: np.ndarray,
    p_x: float,
    p_neg: float,
    p_pos: float,
    heading: str,
    relevance_title: str = RELEVANCE_TITLE,
    signed: bool = True,
    limit: Optional[float] = None,
) -> Path:
    """One four-panel figure (``ExplanationFigureWriter`` for many)."""
    return ExplanationFigureWriter(relevance_title, signed).write(path, x, g_neg, g_pos, relevance, p_x, p_neg,
                                                                  p_pos, heading, limit)
