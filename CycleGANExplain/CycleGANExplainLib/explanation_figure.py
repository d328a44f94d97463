"""A PNG figure of one explanation: x, G-(x), G+(x) and the method's map over x, with the classifier's outputs;
for an explanation through the nodule (nodule_stack), a plot of each slice's probabilities beside them.

matplotlib is imported inside the functions: the Slicer module never draws these figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from .attribution_methods import DEFAULT_METHOD, method_info
from .caveats import explanation_caveats
from .explanation import PatchExplanation
from .formatting import probability_text
from .nodule_stack import NoduleStack
from .notices import RESEARCH_NOTICE
from .overlay import PROBABILITY_LINES, blend_over_grey, display_limit, legend_entries, relevance_to_rgba

CYCLEGAN_AM_TITLE = method_info(DEFAULT_METHOD).map_title
CAVEAT_COLOUR = "#b2182b"  # the module panel's warning red

# The writer's figure, in inches: the panels' row, the margin below it (legend, notice) and above it (titles),
# and one line of caveats, added above the titles per caveat.
FIGURE_WIDTH_IN, FIGURE_HEIGHT_IN, BOTTOM_IN, TOP_IN, CAVEAT_LINE_IN = 10.0, 3.3, 0.396, 0.726, 0.16
# The per-slice plot's share of a figure through the nodule: the image panels keep their size, the figure widens.
PLOT_WIDTH_IN = 3.0


def explanation_panels(explanation: PatchExplanation, limit: float, label: Optional[str] = None,
                       map_title: str = CYCLEGAN_AM_TITLE) -> List[Tuple[np.ndarray, str]]:
    """The four panels' images (grey levels in [0, 1], or RGB) and titles."""
    to_grey = lambda image: (np.asarray(image) + 1.0) / 2.0  # noqa: E731 - normalised [-1, 1] to [0, 1]
    item = explanation  # short name: the titles fit on their lines
    return [
        (to_grey(item.x), f"x{f' ({label})' if label else ''}\np(malignant) = {probability_text(item.p_x)}"),
        (to_grey(item.g_neg), f"G\u207b(x), towards benign\np = {probability_text(item.p_neg)}"),
        (to_grey(item.g_pos), f"G\u207a(x), towards malignant\np = {probability_text(item.p_pos)}"),
        (blend_over_grey(to_grey(item.x), relevance_to_rgba(item.relevance, limit)), f"{map_title}\n\u00b1{limit:.2g}"),
    ]


def draw_explanation_row(axes: Sequence["object"], explanation: PatchExplanation, limit: Optional[float] = None,
                         label: Optional[str] = None, fontsize: float = 9, method: str = DEFAULT_METHOD) -> float:
    """Draw the four panels into four matplotlib axes; returns the map's display limit used.

    ``limit`` fixes the symmetric colour range (one range for a whole figure); ``label`` names the
    true class in the first panel's title; ``method`` made the map (its title and colour range).
    """
    limit = display_limit(explanation.relevance, method) if limit is None else limit
    panels = explanation_panels(explanation, limit, label, method_info(method).map_title)
    for axis, (image, title) in zip(axes, panels):
        axis.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        axis.set_title(title, fontsize=fontsize)
        axis.set_xticks([])
        axis.set_yticks([])
    return limit


class ExplanationFigureWriter:
    """Writes four-panel figures (x, G-(x), G+(x), the map over x) with the overlay's colour legend
    and the research-use notice, one PNG per explanation.

    The matplotlib figure is laid out once and only its images and titles change from one
    explanation to the next: laying a figure out costs far more than drawing it, and a call with
    a thousand seeds must not spend minutes on it. An unsigned map (saliency, Grad-CAM) gets the
    one-entry legend saying that red is magnitude only, so that the absence of blue is not read as
    the absence of benign evidence. The explanation's caveats (caveats.explanation_caveats), if any,
    are lines in red under the heading; the figure grows by a line for each. With ``slice_plot`` each
    figure is of a nodule's centre slice, with a fifth panel beside the images: p(x), p(G-(x)) and
    p(G+(x)) of every slice of its stack (nodule_stack.NoduleStack) against the slice's position.
    """

    def __init__(self, method: str = DEFAULT_METHOD, slice_plot: bool = False) -> None:
        self.method = method
        self.slice_plot = slice_plot
        self._figure = None
        self._plot = None
        self._plot_lines: list = []
        self._images: list = []
        self._titles: list = []
        self._heading = None
        self._caveats = None

    def _lay_out(self, explanation: PatchExplanation, heading: str, limit: float) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch as LegendPatch

        # A bare Figure (not pyplot): nothing global, so writers in several threads do not meet.
        figure = Figure(figsize=(self._width_in, FIGURE_HEIGHT_IN), dpi=100)
        FigureCanvasAgg(figure)
        if self.slice_plot:
            *axes, self._plot = figure.subplots(1, 5, gridspec_kw={"width_ratios": [1, 1, 1, 1, 1.25]})
            self._lay_out_plot(self._plot)
        else:
            axes = figure.subplots(1, 4)
        draw_explanation_row(axes, explanation, limit, method=self.method)
        self._images = [axis.images[0] for axis in axes]
        self._titles = [axis.title for axis in axes]
        self._heading = figure.suptitle(heading, fontsize=10)
        self._caveats = figure.text(0.5, 0.0, "", ha="center", va="top", fontsize=8, color=CAVEAT_COLOUR)
        handles = [LegendPatch(color=rgb, label=meaning) for rgb, meaning in legend_entries(self.method)]
        figure.legend(handles=handles, loc="lower center", ncol=2, fontsize=8, frameon=False)
        figure.text(0.99, 0.01, RESEARCH_NOTICE, ha="right", fontsize=7, color="0.4")
        self._figure = figure

    @property
    def _width_in(self) -> float:
        return FIGURE_WIDTH_IN + (PLOT_WIDTH_IN if self.slice_plot else 0.0)

    def _lay_out_plot(self, axis) -> None:
        """The per-slice plot's fixed parts: its lines (data set per figure), axes, the seed's slice marked."""
        self._plot_lines = [axis.plot([], [], marker="o", markersize=2.5, linewidth=1.2, color=colour, label=label)[0]
                            for _, label, colour in PROBABILITY_LINES]
        axis.axvline(0.0, color="0.6", linewidth=0.8, linestyle=":")  # the seed's slice, the images' slice
        axis.set_ylim(-0.02, 1.02)
        axis.set_xlabel("slice position along S (mm)", fontsize=8, labelpad=1)
        axis.set_title("p(malignant) through the nodule", fontsize=9)
        axis.yaxis.tick_right()  # the ticks' labels away from the images
        axis.tick_params(labelsize=7, pad=1)
        axis.legend(loc="best", fontsize=7, frameon=False, handlelength=1.2)

    def _show_slices(self, stack: NoduleStack) -> None:
        for line, (attribute, _, _) in zip(self._plot_lines, PROBABILITY_LINES):
            line.set_data(stack.offsets_mm, getattr(stack, attribute))
        half_step = stack.plan.step_mm / 2.0
        self._plot.set_xlim(float(stack.offsets_mm[0]) - half_step, float(stack.offsets_mm[-1]) + half_step)

    def _show_caveats(self, lines: Sequence[str]) -> None:
        """The caveats under the heading, the figure's height fitted to their number."""
        height = FIGURE_HEIGHT_IN + CAVEAT_LINE_IN * len(lines)
        width = self._width_in
        self._figure.set_size_inches(width, height)
        # Fixed margins: tight_layout measures every text and costs more than drawing the figure.
        # The plot's tick labels sit right of it: 0.35 inch of margin there.
        right = 1.0 - (0.35 if self.slice_plot else 0.1) / width
        self._figure.subplots_adjust(left=0.1 / width, right=right, bottom=BOTTOM_IN / height, top=1.0 - TOP_IN / height
                                     - CAVEAT_LINE_IN * len(lines) / height, wspace=0.06 if not self.slice_plot else 0.1)
        if self.slice_plot:  # shorter than the images: its axis label above the notice line
            box = self._plot.get_position()
            raise_by = 0.3 / height
            self._plot.set_position([box.x0 + 0.15 / width, box.y0 + raise_by, box.width - 0.15 / width,
                                     box.height - raise_by - 0.05 / height])
        self._caveats.set_text("\n".join(lines))
        self._caveats.set_y(1.0 - 0.3 / height)  # under the heading

    def write(self, path: Union[str, Path], explanation: PatchExplanation, heading: str,
              limit: Optional[float] = None, stack: Optional[NoduleStack] = None) -> Path:
        """One figure; ``limit`` fixes the colour range (default: overlay.display_limit of the map);
        ``stack``: the nodule's slices, whose probabilities the slice plot shows (a writer with
        ``slice_plot`` needs it)."""
        if self.slice_plot and stack is None:
            raise ValueError("A figure with the per-slice plot needs the nodule's stack of slices.")
        limit = display_limit(explanation.relevance, self.method) if limit is None else limit
        if self._figure is None:
            self._lay_out(explanation, heading, limit)
        else:
            panels = explanation_panels(explanation, limit, map_title=method_info(self.method).map_title)
            for image, text, (panel, title) in zip(self._images, self._titles, panels):
                image.set_data(panel)
                text.set_text(title)
            self._heading.set_text(heading)
        if self.slice_plot:
            self._show_slices(stack)
        self._show_caveats([caveat.text for caveat in explanation_caveats(explanation, self.method)])
        from PIL import Image

        path = Path(path)
        canvas = self._figure.canvas
        canvas.draw()
        # PIL straight from the canvas: savefig would draw the figure twice, and zlib's fastest
        # level is a fifth of the cost of its default for these small figures.
        Image.fromarray(np.asarray(canvas.buffer_rgba())).save(path, format="PNG", compress_level=1)
        return path
