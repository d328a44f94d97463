"""The command line's output folder: checked before any work, written atomically, never over an input.

A run writes into a fresh staging folder beside ``--out`` (``.NAME.partial-XXXX``) and renames it
into place when it has finished, so a reader of ``--out`` sees one whole run or none, and two runs
with the same ``--out`` cannot mix their files: the last to finish replaces the other's output as
a whole (the renames are serialised by a lock on the parent folder). ``summary.json`` in the
staging folder is rewritten after every seed, so a run that is killed leaves what it finished there.

An existing ``--out`` is replaced only when it is an earlier run's output: its ``summary.json``
carries this tool's signature (``written_by``) and lists every other entry, and every entry is a
plain file. Names alone prove nothing (a person's folder may be called ``overlay_seed07.nrrd``);
links are never deleted, nor folders other than a run's own subfolder (``dicom/``, RESULT_SUBFOLDERS)
holding only files the summary lists, and a folder that holds (or is) one of the run's inputs is
never touched. Replacing takes two renames (the earlier run aside into ``.NAME.replaced-XXXX/run``,
the new one into place); a run killed between them leaves the earlier run aside, and the next run
into the same ``--out`` puts it back (``recover_replacement``) and says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Set

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the renames alone keep a run whole
    fcntl = None

SUMMARY_FILE = "summary.json"
# summary.json's signature: what marks a folder as this tool's output, which a later run may replace.
WRITTEN_BY = "cyclegan-explain"
_PARTIAL = ".partial-"
# Subfolders a run writes into (the DICOM objects of --dicom); a seed's summary lists their files
# as "dicom/NAME" under "dicom".
DICOM_SUBFOLDER = "dicom"
RESULT_SUBFOLDERS = (DICOM_SUBFOLDER,)
_REPLACED = ".replaced-"


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


def output_path(out: Path) -> Path:
    """``--out`` as an absolute path. A link to a folder stands for that folder (the run's output
    replaces the folder it names); a dangling link and a name that is not UTF-8 (the image writer
    aborts on it) are refused."""
    out = Path(out).expanduser().absolute()
    try:
        str(out).encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(str(out)).decode("utf-8", "backslashreplace")
        raise OutputFolderError(f"--out {shown} is not valid UTF-8, which the image writer cannot use; "
                                "choose another name.") from None
    if out.is_symlink():
        if not out.exists():
            raise OutputFolderError(f"--out {out} is a link to {os.readlink(out)}, which does not exist; remove the "
                                    "link or point it at a folder.")
        out = out.resolve()
    return out


def _listed_by_summary(folder: Path) -> Set[str]:
    """The names an earlier run's signed summary.json lists (itself included); empty when there is
    no such summary."""
    summary = folder / SUMMARY_FILE
    if summary.is_symlink() or not summary.is_file():
        return set()
    try:
        data = json.loads(summary.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return set()
    if not isinstance(data, dict) or data.get("written_by") != WRITTEN_BY or not isinstance(data.get("seeds"), list):
        return set()
    listed = {SUMMARY_FILE}
    # The case's own files (case_summary.csv, ...), then each seed's.
    files = data.get("files")
    listed.update(name for name in (files if isinstance(files, list) else [])
                  if isinstance(name, str) and Path(name).name == name)
    for seed in data["seeds"]:
        if isinstance(seed, dict):
            listed.update(seed[key] for key in ("overlay", "figure") if isinstance(seed.get(key), str))
            nested = seed.get("dicom")
            listed.update(name for name in (nested if isinstance(nested, list) else []) if _is_subfolder_file(name))
    return listed


def _is_subfolder_file(name: object) -> bool:
    """``name`` is "SUBFOLDER/FILE" for one of RESULT_SUBFOLDERS: nothing deeper, no "..", no hidden file."""
    if not isinstance(name, str):
        return False
    parts = name.split("/")
    return len(parts) == 2 and parts[0] in RESULT_SUBFOLDERS and Path(parts[1]).name == parts[1] and \
        not parts[1].startswith(".")


def _strangers(folder: Path) -> List[str]:
    """What in ``folder`` is not an earlier run's own file (folders marked with a slash)."""
    listed = _listed_by_summary(folder)
    strangers = []
    for entry in folder.iterdir():
        if entry.name in RESULT_SUBFOLDERS and entry.is_dir() and not entry.is_symlink():
            strangers += [f"{entry.name}/{child.name}" for child in entry.iterdir()
                          if f"{entry.name}/{child.name}" not in listed or child.is_symlink() or not child.is_file()]
        elif entry.name not in listed or entry.is_symlink() or not entry.is_file():
            strangers.append(entry.name + ("/" if entry.is_dir() and not entry.is_symlink() else ""))
    return sorted(strangers)


def check_output_folder(out: Path, inputs: Iterable[Path]) -> None:
    """Raise OutputFolderError unless ``out`` can take a run's output. Writes nothing but an empty
    folder it removes at once: whether a folder can be made there (a read-only or virtual file
    system such as /proc) is known only by trying."""
    out = output_path(out)
    for given in inputs:
        source = Path(given).expanduser().resolve()
        if _is_within(source, out.resolve()):
            raise OutputFolderError(f"--out {out} is or holds the input {source.name}; choose a folder that "
                                    "does not contain the CT (outputs never replace an input).")
    if out.exists():
        if not out.is_dir():
            raise OutputFolderError(f"--out {out} is a file, not a folder; choose a folder (created if missing).")
        strangers = _strangers(out)
        if strangers:
            shown = ", ".join(strangers[:3]) + (", ..." if len(strangers) > 3 else "")
            raise OutputFolderError(
                f"--out {out} holds files that are not an earlier cyclegan-explain output ({shown}); an earlier "
                f"output is recognised by its {SUMMARY_FILE}, which lists every file there. Choose an empty or new "
                "folder: nothing in this one is touched.")
    existing = _nearest_existing(out.parent)
    if not existing.is_dir():
        raise OutputFolderError(f"--out {out} lies under {existing}, which is a file, not a folder.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputFolderError(f"--out {out}: no permission to write in {existing}.")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".cyclegan-explain-probe-", dir=existing))
    except OSError as error:
        raise OutputFolderError(f"--out {out}: cannot make a folder in {existing} ({error.strerror or error}).") from None


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


def _remove_run(folder: Path) -> None:
    """Delete an earlier run's own files (its summary's list, plain files only) and its folder, which
    is then empty: nothing else is ever deleted."""
    for name in _listed_by_summary(folder):
        entry = folder / name
        if entry.is_file() and not entry.is_symlink():
            entry.unlink()
    for name in RESULT_SUBFOLDERS:  # empty now: _strangers found nothing else in them
        if (folder / name).is_dir() and not (folder / name).is_symlink():
            os.rmdir(folder / name)
    os.rmdir(folder)


def recover_replacement(out: Path) -> List[str]:
    """Finish what a run killed while replacing ``out`` left undone; what was done, for the user.

    Killed between its two renames, a run leaves no ``out`` and the earlier run aside in
    ``.NAME.replaced-XXXX/run``: it is put back. Killed after them, it leaves the replaced run
    aside: its files are deleted, as the run would have done. Anything else found aside is left and
    reported."""
    out = output_path(out)
    if not out.parent.is_dir():
        return []
    done: List[str] = []
    with _folder_lock(out.parent):
        for aside in sorted(out.parent.iterdir()):
            if not aside.name.startswith(f".{out.name}{_REPLACED}") or aside.is_symlink() or not aside.is_dir():
                continue
            earlier = aside / "run"
            if earlier.is_dir() and not earlier.is_symlink() and not out.exists() and not out.is_symlink():
                os.rename(earlier, out)
                os.rmdir(aside)
                done.append(f"{out} was missing: a run was stopped while replacing it; the earlier run's output "
                            f"was put back from {aside.name}.")
            elif earlier.is_dir() and not earlier.is_symlink() and not _strangers(earlier):
                _remove_run(earlier)
                os.rmdir(aside)
                done.append(f"removed {aside.name}, the output a stopped run had already replaced.")
            elif not any(aside.iterdir()):
                os.rmdir(aside)
            else:
                done.append(f"{aside} is left from a stopped run but holds more than a run's output; "
                            "look at it and remove it yourself.")
    return done


class RunFolder:
    """A run's staging folder beside ``out``, renamed onto ``out`` by ``commit``.

    When a run ends without ``commit`` (an error, Ctrl-C, a kill), the staging folder stays
    with what was finished and its summary; ``staging`` names it.
    """

    def __init__(self, out: Path) -> None:
        self.out = output_path(out)
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.staging = Path(tempfile.mkdtemp(prefix=f".{self.out.name}{_PARTIAL}", dir=self.out.parent))
        except OSError as error:
            raise OutputFolderError(f"--out {self.out}: cannot make a folder in {self.out.parent} "
                                    f"({error.strerror or error}).") from None

    def write_summary(self, summary: Dict[str, Any]) -> Path:
        """summary.json, signed as this tool's, written whole or not at all (a temporary file renamed over it)."""
        target = self.staging / SUMMARY_FILE
        partial = target.with_suffix(".json.tmp")
        partial.write_text(json.dumps({"written_by": WRITTEN_BY, **summary}, indent=2) + "\n")
        os.replace(partial, target)
        return target

    def discard(self) -> None:
        """Remove the staging folder of a run that failed before writing any result (its summary at most)."""
        for name in (SUMMARY_FILE, SUMMARY_FILE + ".tmp"):
            with contextlib.suppress(FileNotFoundError):
                (self.staging / name).unlink()
        with contextlib.suppress(OSError):  # not empty after all: it stays, as an interrupted run's does
            os.rmdir(self.staging)

    def commit(self) -> bool:
        """Put the finished run at ``out``; True when it replaced an earlier run's output there."""
        with _folder_lock(self.out.parent):
            if not self.out.exists():
                os.rename(self.staging, self.out)
                return False
            # Checked again under the lock: another run or a person may have put files there since.
            check_output_folder(self.out, ())
            aside = Path(tempfile.mkdtemp(prefix=f".{self.out.name}{_REPLACED}", dir=self.out.parent))
            os.rename(self.out, aside / "run")
            try:
                os.rename(self.staging, self.out)
            except OSError:
                os.rename(aside / "run", self.out)
                os.rmdir(aside)
                raise
            _remove_run(aside / "run")
            os.rmdir(aside)
            return True
