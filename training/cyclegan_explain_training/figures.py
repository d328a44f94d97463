"""The evaluation figures: after the paper's Fig. 6, benign and malignant examples with x, G-(x),
G+(x) and the relevance R = G+(x) - G-(x) over the patch; and reliability diagrams.

R is drawn with the module's own colour table and blending (CycleGANExplainLib.overlay), and one
symmetric range for the whole figure, so rows compare and the colours mean what they mean in
Slicer. Drawn with matplotlib's Agg canvas directly: no global backend state, no display needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, Normalize
from matplotlib.figure import Figure

from CycleGANExplainLib.explanation import PatchExplanation
from CycleGANExplainLib.explanation_figure import draw_explanation_row
from CycleGANExplainLib.overlay import colour_table, symmetric_limit

from .dataset import BENIGN, MALIGNANT
from .metrics import DECISION_THRESHOLD

COLUMNS = 4  # x, G-(x), G+(x), R over x
PANEL_INCHES = 2.2
COLOURBAR_INCHES = 1.4  # the bar, its ticks and its label
MARGIN_INCHES = 0.1
DPI = 100


def figure_size_inches(rows: int) -> Tuple[float, float]:
    return (COLUMNS * PANEL_INCHES + COLOURBAR_INCHES, rows * PANEL_INCHES)


def choose_examples(
    labels: np.ndarray, p_x: np.ndarray, per_class: int, seed: int = 0
) -> List[int]:
    """Indices of up to ``per_class`` benign then malignant examples, in a seeded random order.

    Like the paper's study, correctly classified samples are preferred, so that classification
    errors are not mistaken for explanation errors; misclassified ones fill up when too few are
    correct (an untrained bundle), and the figure's titles show the outputs either way.
    """
    rng = np.random.default_rng(seed)
    correct = (np.asarray(p_x) >= DECISION_THRESHOLD) == (np.asarray(labels) == MALIGNANT)
    chosen: List[int] = []
    for label in (BENIGN, MALIGNANT):
        in_class = np.asarray(labels) == label
        preferred = rng.permutation(np.flatnonzero(in_class & correct))
        others = rng.permutation(np.flatnonzero(in_class & ~correct))
        chosen.extend(int(i) for i in np.concatenate([preferred, others])[:per_class])
    return chosen


def choose_examples_by_label(labels: np.ndarray, per_class: int, seed: int = 0) -> List[int]:
    """Indices of up to ``per_class`` benign then malignant examples, each class in a seeded random
    order. Only the labels are used, never the model's outputs, so the examples cannot be picked
    for looking good."""
    rng = np.random.default_rng(seed)
    chosen: List[int] = []
    for label in (BENIGN, MALIGNANT):
        chosen.extend(int(i) for i in rng.permutation(np.flatnonzero(np.asarray(labels) == label))[:per_class])
    return chosen


def explanation_figure(
    path: Union[str, Path],
    x: np.ndarray,
    g_neg: np.ndarray,
    g_pos: np.ndarray,
    p_x: np.ndarray,
    p_neg: np.ndarray,
    p_pos: np.ndarray,
    labels: np.ndarray,
    indices: Sequence[int],
    title: str = "",
) -> Path:
    """Save one row per index (x, G-(x), G+(x), R over x) as a PNG; returns the path."""
    if len(indices) == 0:
        raise ValueError("No examples to draw.")
    indices = list(indices)
    relevance = g_pos[indices] - g_neg[indices]
    limit = symmetric_limit(relevance)
    figure = Figure(figsize=figure_size_inches(len(indices)), dpi=DPI)
    FigureCanvasAgg(figure)
    width_inches = figure_size_inches(len(indices))[0]
    panels_right = (MARGIN_INCHES + COLUMNS * PANEL_INCHES) / width_inches
    grid = figure.add_gridspec(len(indices), COLUMNS, left=MARGIN_INCHES / width_inches, right=panels_right,
                               top=0.92, bottom=0.02, wspace=0.08, hspace=0.45)
    for row, index in enumerate(indices):
        axes = [figure.add_subplot(grid[row, column]) for column in range(COLUMNS)]
        explanation = PatchExplanation(x[index], g_pos[index], g_neg[index], relevance[row], p_x[index], p_pos[index],
                                       p_neg[index])
        draw_explanation_row(axes, explanation, limit=limit,
                             label="malignant" if labels[index] == MALIGNANT else "benign", fontsize=8)
    colourbar_axes = figure.add_axes([panels_right + 0.15 / width_inches, 0.2, 0.15 / width_inches, 0.6])
    colourbar = figure.colorbar(_relevance_mappable(limit), cax=colourbar_axes)
    colourbar.set_label("R (normalised units): red malignant, blue benign", fontsize=8)
    figure.suptitle(title or "p = classifier malignancy probability", fontsize=9)
    path = Path(path)
    figure.savefig(path, dpi=DPI)  # no tight bounding box: the size stays figure_size_inches * DPI
    return path


def _relevance_mappable(limit: float) -> ScalarMappable:
    colours = ListedColormap(colour_table()[:, :3], name="CycleGANExplainRelevance")
    return ScalarMappable(norm=Normalize(-limit, limit), cmap=colours)


def reliability_diagram(
    path: Union[str, Path],
    panels: Sequence[Tuple[str, Dict[str, Any], Optional[Dict[str, Any]]]],
) -> Path:
    """One panel per (title, bins before, bins after or None), bins as calibration.reliability_bins
    gives them: observed malignant fraction against mean predicted probability, marker area by count."""
    if not panels:
        raise ValueError("No reliability panels to draw.")
    figure = Figure(figsize=(3.2 * len(panels), 3.4), dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for axis, (title, before, after) in zip(axes, panels):
        axis.plot([0, 1], [0, 1], color="0.6", linewidth=1, linestyle="--", label="calibrated")
        for bins, colour, name in ((before, "tab:red", "classifier"), (after, "tab:blue", "temperature-scaled")):
            if bins is None:
                continue
            filled = [i for i, count in enumerate(bins["count"]) if count]
            predicted = [bins["mean_predicted"][i] for i in filled]
            observed = [bins["fraction_malignant"][i] for i in filled]
            sizes = [12 + 4 * bins["count"][i] ** 0.75 for i in filled]
            axis.plot(predicted, observed, color=colour, linewidth=1, clip_on=False)
            axis.scatter(predicted, observed, s=sizes, color=colour, alpha=0.7, label=name, clip_on=False)
        axis.set_xlim(-0.02, 1.02)
        axis.set_ylim(-0.02, 1.02)
        axis.set_aspect("equal")
        axis.set_title(title, fontsize=9)
        axis.set_xlabel("mean predicted malignancy", fontsize=8)
        axis.set_ylabel("observed malignant fraction", fontsize=8)
        axis.tick_params(labelsize=7)
        axis.legend(fontsize=7, loc="upper left")
    figure.suptitle("Reliability (10 equal-width bins; marker area grows with the bin's count)", fontsize=9)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=DPI)
    return path
