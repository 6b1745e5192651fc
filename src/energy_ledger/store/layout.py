"""Where things live under a results root, and the checks that keep every path inside it.

Layout (format version 1)::

    <root>/raw/<experiment_id>/process_<i>.events.jsonl
    <root>/raw/<experiment_id>/process_<i>.done
    <root>/aggregated/<experiment_id>.json
    <root>/aggregated/<experiment_id>.partial.json
    <root>/aggregated/results.csv

Nothing is read or written outside the root: experiment ids must match ``EXPERIMENT_ID_RE``,
and a path whose real location (after resolving symbolic links) leaves the root is refused.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from energy_ledger.exceptions import UnsafePathError

EXPERIMENT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
LOG_RE = re.compile(r"^process_(0|[1-9][0-9]{0,5})\.events\.jsonl\Z")
MARKER_RE = re.compile(r"^process_(0|[1-9][0-9]{0,5})\.done\Z")
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


def log_name(process_index: int) -> str:
    """File name of process ``process_index``'s event log."""
    return f"process_{process_index}.events.jsonl"


def marker_name(process_index: int) -> str:
    """File name of process ``process_index``'s completion marker."""
    return f"process_{process_index}.done"


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
