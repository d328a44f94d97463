"""What a training run tells its user: a progress bar and a JSON-lines metrics log.

tqdm is used when installed; otherwise a single stderr line is rewritten in place. Only
aggregate numbers are logged, never patient identifiers.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional, Union


class Progress:
    """``update(n, **postfix)``; ``close()``. Silent when ``enabled`` is False (other DDP ranks)."""

    def __init__(self, total: int, description: str, initial: int = 0, enabled: bool = True):
        self.total, self.done, self.description, self.enabled = total, initial, description, enabled
        self._bar = None
        self._last_print = 0.0
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self._bar = tqdm(total=total, initial=initial, desc=description, dynamic_ncols=True)

    def update(self, count: int = 1, **postfix: float) -> None:
        self.done += count
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(count)
            self._bar.set_postfix({key: f"{value:.3g}" for key, value in postfix.items()}, refresh=False)
            return
        now = time.monotonic()
        if now - self._last_print >= 1.0 or self.done >= self.total:  # at most one line a second
            self._last_print = now
            details = " ".join(f"{key}={value:.3g}" for key, value in postfix.items())
            sys.stderr.write(f"\r{self.description}: {self.done}/{self.total} {details}")
            sys.stderr.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        else:
            sys.stderr.write("\n")


class MetricsLog:
    """Appends one JSON object per line; a resumed run continues the same file."""

    def __init__(self, path: Optional[Union[str, Path]]):
        self.path = Path(path) if path is not None else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: Dict[str, Any]) -> None:
        if self.path is None:
            return
        with open(self.path, "a") as stream:
            stream.write(json.dumps(record) + "\n")


def read_metrics(path: Union[str, Path]) -> list:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
