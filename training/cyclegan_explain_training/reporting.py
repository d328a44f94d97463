"""What the evaluation and method-comparison reports share: strict JSON values, numbers and
estimates as text, and Markdown tables."""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence

UNTRAINED_BANNER = "**UNTRAINED bundle (random weights): these numbers only test the pipeline.**"


def entry_at(tree: Dict[str, Any], path: str) -> Optional[Any]:
    """The entry of nested dicts at a slash-separated ``path`` ("figures/g_pos/auc"), None where absent."""
    node: Any = tree
    for part in path.split("/"):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def nest_paths(flat: Dict[str, Any]) -> Dict[str, Any]:
    """{"a/b/c": v} -> {"a": {"b": {"c": v}}}: figures named by path, nested as the JSON holds them."""
    nested: Dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split("/")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def not_available(note: str) -> Dict[str, Any]:
    """A figure reported as n/a instead of estimated (a stratum too small to rest a number on), with why."""
    return {"value": None, "ci_low": None, "ci_high": None, "undefined_resamples": None, "note": note}


def json_safe(value: Any) -> Any:
    """NaN and infinities become null: strict JSON has no NaN."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def number_text(value: Any) -> str:
    """Three decimals; n/a for an undefined (null) value."""
    return "n/a" if value is None else f"{value:.3f}"


def estimate_text(entry: Optional[Dict[str, Any]]) -> str:
    """"value [ci_low, ci_high]" of a bootstrap estimate (metrics.Estimate.as_dict, made JSON-safe),
    with the count of undefined resamples where there are any; empty for no estimate."""
    if entry is None:
        return ""
    if entry["ci_low"] is None:  # undefined in every resample
        text = number_text(entry["value"])
    else:
        text = f"{number_text(entry['value'])} [{number_text(entry['ci_low'])}, {number_text(entry['ci_high'])}]"
    if entry.get("undefined_resamples"):
        text += f" ({entry['undefined_resamples']} resamples undefined)"
    return text


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    """The lines of a Markdown table; a pipe inside a cell is escaped (|R| would split the row)."""
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return [line(header), "|" + "---|" * len(header)] + [line(row) for row in rows]
