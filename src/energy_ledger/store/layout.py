"""Where things live under a results root, and the checks that keep every path inside it.

Layout (format version 1; the segmented layout of docs/format.md §7 instead of the log)::

    <root>/raw/<experiment_id>/process_<i>.events.jsonl
    <root>/raw/<experiment_id>/process_<i>.segments/<n, 8 digits>.jsonl
    <root>/raw/<experiment_id>/process_<i>.done
    <root>/aggregated/<experiment_id>.json
    <root>/aggregated/<experiment_id>.partial.json
    <root>/aggregated/results.csv

Nothing is read or written outside the root: experiment ids must match ``EXPERIMENT_ID_RE``,
and a path whose real location (after resolving symbolic links) leaves the root is refused.
Outputs are stricter still: ``aggregated/`` and every file written in it must be real (not
symbolic links), wherever a link would lead, so that what a reader of the root sees is what
was written.

``results_root`` and ``experiment_location`` turn a path a user typed into a layout, or into
an error that says what the path is and what was probably meant ("did you mean ROOT?").
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from energy_ledger.exceptions import LedgerError, UnsafePathError

EXPERIMENT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
LOG_RE = re.compile(r"^process_(0|[1-9][0-9]{0,5})\.events\.jsonl\Z")
MARKER_RE = re.compile(r"^process_(0|[1-9][0-9]{0,5})\.done\Z")
SEGMENTS_RE = re.compile(r"^process_(0|[1-9][0-9]{0,5})\.segments\Z")
SEGMENT_RE = re.compile(r"^([0-9]{8})\.jsonl\Z")
LEGACY_RESULT_RE = re.compile(r"^process_(0|[1-9][0-9]{0,5})\.json\Z")
LEGACY_MARKER_RE = re.compile(r"^\.completed_(0|[1-9][0-9]{0,5})\Z")

RAW_DIR = "raw"
AGGREGATED_DIR = "aggregated"
CSV_NAME = "results.csv"
STATE_DIR = ".energy-ledger"


def is_valid_experiment_id(name: str) -> bool:
    """True when ``name`` is an acceptable experiment id (and so a safe folder name)."""
    return bool(EXPERIMENT_ID_RE.fullmatch(name)) and ".." not in name


def check_experiment_id(name: str) -> str:
    """Return ``name`` if it is a valid experiment id; raise ``UnsafePathError`` otherwise."""
    if not is_valid_experiment_id(name):
        raise UnsafePathError(
            f"unsafe experiment id {name!r}: it must match {EXPERIMENT_ID_RE.pattern} "
            "and contain no '..'"
        )
    return name


def inside(root: Path, path: Path) -> bool:
    """True when the real location of ``path`` is ``root`` or below it."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


@dataclass(frozen=True, slots=True)
class ResultsLayout:
    """The paths of one results root."""

    root: Path

    @classmethod
    def at(cls, root: str | os.PathLike[str]) -> ResultsLayout:
        """The layout of ``root`` (made absolute; it need not exist yet)."""
        return cls(Path(os.path.abspath(root)))

    @property
    def raw_dir(self) -> Path:
        """``<root>/raw``: one folder per experiment."""
        return self.root / RAW_DIR

    @property
    def aggregated_dir(self) -> Path:
        """``<root>/aggregated``: results."""
        return self.root / AGGREGATED_DIR

    @property
    def csv_path(self) -> Path:
        """``<root>/aggregated/results.csv``."""
        return self.aggregated_dir / CSV_NAME

    @property
    def state_dir(self) -> Path:
        """``<root>/.energy-ledger``: the daemon's state."""
        return self.root / STATE_DIR

    def experiment_dir(self, experiment_id: str) -> Path:
        """``<root>/raw/<experiment_id>``, after checking the id."""
        return self.raw_dir / check_experiment_id(experiment_id)

    def log_path(self, experiment_id: str, process_index: int) -> Path:
        """The event log of one process."""
        return self.experiment_dir(experiment_id) / log_name(process_index)

    def marker_path(self, experiment_id: str, process_index: int) -> Path:
        """The completion marker of one process."""
        return self.experiment_dir(experiment_id) / marker_name(process_index)

    def result_path(self, experiment_id: str, *, partial: bool = False) -> Path:
        """``aggregated/<id>.json`` or ``aggregated/<id>.partial.json``."""
        suffix = ".partial.json" if partial else ".json"
        return self.aggregated_dir / f"{check_experiment_id(experiment_id)}{suffix}"

    def check_inside(self, path: Path) -> Path:
        """Return ``path`` if its real location is inside the root; raise otherwise."""
        if not inside(self.root, path):
            raise UnsafePathError(f"{path} leads outside the results root {self.root}")
        return path

    def outputs_dir(self, *, create: bool = False) -> Path:
        """``<root>/aggregated``, checked to be a real folder inside the root.

        Args:
            create: make the folder when it does not exist yet.

        Raises:
            UnsafePathError: it is a symbolic link (wherever it leads) or leads out of the root.
            LedgerError: it is not a folder, or cannot be created.
        """
        folder = self.aggregated_dir
        if not os.path.lexists(folder):
            if not create:
                return folder
            self.check_inside(folder)
        return self.check_inside(real_folder(folder))

    def check_output_file(self, path: Path) -> Path:
        """Return ``path`` (a file directly in ``aggregated/``) if it is safe to replace.

        Raises:
            UnsafePathError: it is not directly in ``aggregated/``, or it is a symbolic link, or
                it is something other than a regular file (a folder, a FIFO).
        """
        if path.parent != self.aggregated_dir:
            raise UnsafePathError(f"{path} is not in {self.aggregated_dir}; refusing to write it")
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return self.check_inside(path)
        except OSError as exc:
            raise LedgerError(f"cannot use {path}: {exc.strerror or exc}") from exc
        if stat.S_ISLNK(st.st_mode):
            raise UnsafePathError(
                f"{path} is a symbolic link (to {os.readlink(path)}); refusing to write "
                "through it: remove the link"
            )
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePathError(f"{path} is not a regular file; refusing to replace it")
        return self.check_inside(path)


def real_folder(folder: Path) -> Path:
    """``folder`` as a real folder, made (without parents) when missing: every output folder
    (``aggregated/``, the dataset, the bundles, the figures) is checked here before a write.

    Raises:
        UnsafePathError: it is a symbolic link (wherever it leads), or a file, not a folder.
        LedgerError: it cannot be made or examined.
    """
    try:
        st = os.lstat(folder)
    except FileNotFoundError:
        try:
            folder.mkdir(exist_ok=True)
            st = os.lstat(folder)
        except OSError as exc:
            raise LedgerError(f"cannot create {folder}: {exc.strerror or exc}") from exc
    except OSError as exc:
        raise LedgerError(f"cannot use {folder}: {exc.strerror or exc}") from exc
    if stat.S_ISLNK(st.st_mode):
        raise UnsafePathError(
            f"{folder} is a symbolic link (to {os.readlink(folder)}); outputs are written only "
            "into a real folder inside the root: replace the link with a folder"
        )
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePathError(f"cannot write into {folder}: it is a file, not a folder")
    return folder


def log_name(process_index: int) -> str:
    """File name of process ``process_index``'s event log."""
    return f"process_{process_index}.events.jsonl"


def marker_name(process_index: int) -> str:
    """File name of process ``process_index``'s completion marker."""
    return f"process_{process_index}.done"


def segments_name(process_index: int) -> str:
    """Folder name of process ``process_index``'s segments (the segmented layout)."""
    return f"process_{process_index}.segments"


def segment_name(number: int) -> str:
    """File name of segment ``number``: eight digits, zero-padded, so names sort as numbers."""
    return f"{number:08d}.jsonl"


def experiment_key(experiment_id: str) -> str:
    """``raw/<experiment_id>/``: the key prefix of an experiment in an object store."""
    return f"{RAW_DIR}/{check_experiment_id(experiment_id)}/"


def _example_child(folder: Path) -> str:
    """The first experiment-like subfolder of ``folder`` (for a hint), or ``<experiment_id>``."""
    try:
        names = sorted(e.name for e in os.scandir(folder) if e.is_dir())
    except OSError:
        names = []
    return next((n for n in names if is_valid_experiment_id(n)), "<experiment_id>")


def results_root(root: str | os.PathLike[str]) -> ResultsLayout:
    """The layout of a results root a user named, checked to hold ``raw/``.

    Raises:
        LedgerError: the folder does not exist, is not a folder, or holds no ``raw/``; the
            message says what it looks like instead (the ``raw/`` folder itself, an experiment
            folder, ``aggregated/``) and which folder was probably meant.
    """
    layout = ResultsLayout.at(root)
    path = layout.root
    if not path.exists():
        raise LedgerError(f"{path}: no such results folder")
    if not path.is_dir():
        raise LedgerError(f"{path}: not a folder (a results root is a folder holding raw/)")
    if layout.raw_dir.is_dir():
        return layout
    parent = path.parent
    if path.name == RAW_DIR:
        hint = f"it is the raw/ folder of a results root; did you mean {parent}?"
    elif path.name == AGGREGATED_DIR and (parent / RAW_DIR).is_dir():
        hint = f"it is the aggregated/ folder of a results root; did you mean {parent}?"
    elif parent.name == RAW_DIR:
        hint = f"it looks like an experiment folder; did you mean {parent.parent}?"
    elif (parent / RAW_DIR).is_dir():
        hint = f"did you mean {parent}?"
    else:
        hint = "a results root holds raw/<experiment_id>/ folders (see docs/format.md)"
    raise LedgerError(f"{path}: not a results root (no raw/ folder inside); {hint}")


def experiment_location(experiment_dir: str | os.PathLike[str]) -> tuple[ResultsLayout, str]:
    """The layout and id of an experiment folder a user named (``ROOT/raw/<id>``).

    Like ``layout_of_experiment_dir``, but a results root or its ``raw/`` folder given where an
    experiment folder is expected is an error with a hint, not an empty experiment.

    Raises:
        LedgerError: the path is a results root or a ``raw/`` folder (with the folder probably
            meant), or its name is not a valid experiment id (``UnsafePathError``).
    """
    path = Path(os.path.abspath(experiment_dir))
    if path.is_dir():
        if (path / RAW_DIR).is_dir():
            example = path / RAW_DIR / _example_child(path / RAW_DIR)
            raise LedgerError(
                f"{path} is a results root, not an experiment folder; did you mean {example}?"
            )
        if path.name == RAW_DIR and not any(
            LOG_RE.fullmatch(n) or LEGACY_RESULT_RE.fullmatch(n) for n in os.listdir(path)
        ):
            example = path / _example_child(path)
            raise LedgerError(
                f"{path} is the raw/ folder of a results root, not an experiment folder; "
                f"did you mean {example}?"
            )
    return layout_of_experiment_dir(path)


def layout_of_experiment_dir(experiment_dir: Path) -> tuple[ResultsLayout, str]:
    """The layout and experiment id for a ``<root>/raw/<id>`` folder.

    A folder that is not inside a ``raw`` folder is treated as its own root's only experiment:
    results then go to ``<folder>/../aggregated``. Raises ``UnsafePathError`` for a bad id.
    """
    experiment_dir = Path(os.path.abspath(experiment_dir))
    experiment_id = check_experiment_id(experiment_dir.name)
    parent = experiment_dir.parent
    root = parent.parent if parent.name == RAW_DIR else parent
    return ResultsLayout(root), experiment_id
