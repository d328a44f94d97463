"""The command line's output folder: checked before any work, written atomically, never over an input.

A run writes into a fresh staging folder beside ``--out`` (``.NAME.partial-XXXX``) and renames it
into place when it has finished, so a reader of ``--out`` sees one whole run or none, and two runs
with the same ``--out`` cannot mix their files: the last to finish replaces the other's output as
a whole (the renames are serialised by a lock on the parent folder). ``summary.json`` in the staging folder is rewritten after every seed, so a run
that is killed leaves what it finished there. An existing ``--out`` is replaced only when it holds
an earlier run's output and nothing else; a folder that holds (or is) one of the run's inputs is
never touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the renames alone keep a run whole
    fcntl = None

SUMMARY_FILE = "summary.json"
# What a run writes; an existing --out holding anything else is not an earlier run's output.
_RUN_FILE = re.compile(r"(summary\.json|overlay_seed\d+\.nrrd|explanation_seed\d+\.png)")


class OutputFolderError(ValueError):
    """``--out`` cannot take this run's output (the message says why and what to do)."""


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _is_within(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


def check_output_folder(out: Path, inputs: Iterable[Path]) -> None:
    """Raise OutputFolderError unless ``out`` can take a run's output; writes nothing."""
    out = Path(out).expanduser().absolute()
    for given in inputs:
        source = Path(given).expanduser().resolve()
        if _is_within(source, out.resolve()):
            raise OutputFolderError(f"--out {out} is or holds the input {source.name}; choose a folder that "
                                    "does not contain the CT (outputs never replace an input).")
    if out.exists():
        if not out.is_dir():
            raise OutputFolderError(f"--out {out} is a file, not a folder; choose a folder (created if missing).")
        strangers = sorted(path.name for path in out.iterdir() if not _RUN_FILE.fullmatch(path.name))
        if strangers:
            shown = ", ".join(strangers[:3]) + (", ..." if len(strangers) > 3 else "")
            raise OutputFolderError(
                f"--out {out} holds files that are not an earlier cyclegan-explain output ({shown}); "
                "choose an empty or new folder, nothing in it would be kept.")
    existing = _nearest_existing(out.parent)
    if not existing.is_dir():
        raise OutputFolderError(f"--out {out} lies under {existing}, which is a file, not a folder.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputFolderError(f"--out {out}: no permission to write in {existing}.")


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``folder`` itself: no lock file is left beside the output."""
    if fcntl is None:
        yield
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock


class RunFolder:
    """A run's staging folder beside ``out``, renamed onto ``out`` by ``commit``.

    When a run ends without ``commit`` (an error, Ctrl-C, a kill), the staging folder stays
    with what was finished and its summary; ``staging`` names it.
    """

    def __init__(self, out: Path) -> None:
        self.out = Path(out).expanduser().absolute()
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.staging = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.partial-", dir=self.out.parent))

    def write_summary(self, summary: Dict[str, Any]) -> Path:
        """summary.json written whole or not at all (a temporary file renamed over it)."""
        target = self.staging / SUMMARY_FILE
        partial = target.with_suffix(".json.tmp")
        partial.write_text(json.dumps(summary, indent=2) + "\n")
        os.replace(partial, target)
        return target

    def commit(self) -> bool:
        """Put the finished run at ``out``; True when it replaced an earlier run's output there."""
        with _folder_lock(self.out.parent):
            if not self.out.exists():
                os.rename(self.staging, self.out)
                return False
            # Checked again under the lock: another run or a person may have put files there since.
            check_output_folder(self.out, ())
            retired = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.replaced-", dir=self.out.parent))
            os.rename(self.out, retired / "run")
            os.rename(self.staging, self.out)
            shutil.rmtree(retired)
            return True
