"""The aggregated results of a root, read back: which result files there are, each one loaded.

``show`` and the CSV rebuild (``table``) both start here, so they agree on what counts as a
result: ``aggregated/<id>.json`` (complete) and ``aggregated/<id>.partial.json`` (explicitly
partial, from ``recover``), for a valid experiment id. Hidden files (the lock, the CSV's sources
file, temporary files) are not results. Symbolic links and anything that is not a regular file
are skipped with a warning and never opened, so nothing outside the root is read and a FIFO
cannot hang a reader.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from energy_ledger.exceptions import LedgerError
from energy_ledger.models import ExperimentResult
from energy_ledger.store.files import open_regular
from energy_ledger.store.layout import ResultsLayout, is_valid_experiment_id, results_root

logger = logging.getLogger(__name__)

RESULT_SUFFIX = ".json"
PARTIAL_SUFFIX = ".partial.json"


@dataclass(frozen=True, slots=True)
class ResultFile:
    """One result file in ``aggregated/``.

    Attributes:
        experiment_id: the id its name gives.
        folder: the ``aggregated`` folder.
        name: the file's name.
        partial: True for ``<id>.partial.json``.
        identity: ``(inode, size, mtime_ns, ctime_ns)`` when it was listed; a rewrite (always
            a new inode, as writes are atomic renames) or an edit changes it.
    """

    experiment_id: str
    folder: Path
    name: str
    partial: bool
    identity: tuple[int, int, int, int]

    @property
    def path(self) -> Path:
        """The file's path (built on use: a thousand ``Path`` objects per listing add up)."""
        return self.folder / self.name


def identity_of(st: os.stat_result) -> tuple[int, int, int, int]:
    """A file's identity for change detection: inode, size and both timestamps in ns."""
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def parse_result_name(name: str) -> tuple[str, bool] | None:
    """``(experiment_id, partial)`` for a result file name; ``None`` for any other file."""
    if name.startswith("."):
        return None
    if name.endswith(PARTIAL_SUFFIX):
        experiment_id, partial = name[: -len(PARTIAL_SUFFIX)], True
    elif name.endswith(RESULT_SUFFIX):
        experiment_id, partial = name[: -len(RESULT_SUFFIX)], False
    else:
        return None
    return (experiment_id, partial) if is_valid_experiment_id(experiment_id) else None


def list_results(layout: ResultsLayout) -> list[ResultFile]:
    """Every result file in ``<root>/aggregated``, sorted by id (complete before partial).

    Raises:
        UnsafePathError: ``aggregated`` is a symbolic link.
        LedgerError: it cannot be listed.
    """
    folder = layout.outputs_dir()
    found: list[ResultFile] = []
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise LedgerError(f"cannot list {folder}: {exc.strerror or exc}") from exc
    for entry in entries:
        parsed = parse_result_name(entry.name)
        if parsed is None:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue  # removed while listing
        if stat.S_ISLNK(st.st_mode):
            logger.warning("%s is a symbolic link; not read as a result", entry.path)
            continue
        if not stat.S_ISREG(st.st_mode):
            logger.warning("%s is not a regular file; not read as a result", entry.path)
            continue
        found.append(ResultFile(parsed[0], folder, entry.name, parsed[1], identity_of(st)))
    found.sort(key=lambda f: (f.experiment_id, f.partial))
    return found


def preferred(files: Iterable[ResultFile]) -> list[ResultFile]:
    """One file per experiment: the complete result where there is one, else the partial."""
    chosen: dict[str, ResultFile] = {}
    for file in files:
        held = chosen.get(file.experiment_id)
        if held is None or (held.partial and not file.partial):
            chosen[file.experiment_id] = file
    return [chosen[k] for k in sorted(chosen)]


def read_regular_file(path: Path, *, follow_links: bool = False) -> bytes:
    """The bytes of a regular file, opened without blocking (``store.files.open_regular``).

    Args:
        path: the file.
        follow_links: open the file a symbolic link leads to (only for a path a user named
            himself); by default a link is refused.

    Raises:
        LedgerError: it is a link, not a regular file, or cannot be read (the message names it).
    """
    try:
        with open_regular(path, follow_links=follow_links) as fh:
            return fh.read()
    except OSError as exc:
        raise LedgerError(f"{path}: cannot read: {exc.strerror or exc}") from exc


def load_result(path: Path, *, follow_links: bool = False) -> ExperimentResult:
    """Read one result file (see ``read_regular_file`` for ``follow_links``).

    Raises:
        LedgerError: it cannot be read, or is not an ``ExperimentResult`` (the message names
            the file and the first problem).
    """
    return parse_result(read_regular_file(path, follow_links=follow_links), str(path))


def parse_result(data: bytes, name: str) -> ExperimentResult:
    """A result file's bytes as an ``ExperimentResult`` (``name`` says where, in messages).

    Raises:
        LedgerError: they are not one (the message names ``name`` and the first problem).
    """
    try:
        return ExperimentResult.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the file"
        raise LedgerError(
            f"{name}: not an ExperimentResult ({exc.error_count()} problems; first: "
            f"{where}: {first['msg']})"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise LedgerError(f"{name}: not an ExperimentResult ({exc})") from None


@dataclass(frozen=True, slots=True)
class Shown:
    """What ``show`` found: the results it could read, and the files it could not."""

    results: list[tuple[Path | str, ExperimentResult]] = field(default_factory=list)
    """Each result with where it was read: a file, or an object's URL on a bucket root."""
    problems: list[str] = field(default_factory=list)


def results_to_show(path: str | os.PathLike[str]) -> Shown:
    """The results ``show`` prints: one result file, or one per experiment under a root.

    Under a root each experiment appears once, from ``<id>.json`` when there is one, else from
    ``<id>.partial.json``; a file that cannot be read is listed in ``problems``.

    Raises:
        LedgerError: the path is neither a result file nor a results root with results, or the
            one file given cannot be read (the message names it).
    """
    target = Path(os.path.abspath(path))
    if not target.is_dir():
        return Shown([(target, load_result(target, follow_links=True))])
    if (target / "raw").is_dir() or (target / "aggregated").is_dir():
        layout = ResultsLayout.at(target)
    elif target.name == "aggregated":
        raise LedgerError(f"{target}: is the aggregated/ folder; did you mean {target.parent}?")
    else:
        layout = results_root(target)  # raises, with a hint
    files = preferred(list_results(layout))
    if not files:
        raise LedgerError(f"{target}: no aggregated results (run `energy-ledger replay` first)")
    shown = Shown()
    for file in files:
        try:
            shown.results.append((file.path, load_result(file.path)))
        except LedgerError as exc:
            shown.problems.append(str(exc))
    return shown


def key_figures(result: ExperimentResult) -> dict[str, Any]:
    """The figures ``show`` prints for a result, by name (units in the names)."""
    lat = result.latency_stats
    e2e = result.extended_metrics.request_latency if result.extended_metrics else None
    return {
        "processes": len(result.process_results),
        "gpus": len(result.energy_per_device_j or []),
        "total_tokens": result.total_tokens,
        "total_energy_j": result.total_energy_j,
        "energy_adjusted_j": result.energy_adjusted_j,
        "total_inference_time_sec": result.total_inference_time_sec,
        "avg_tokens_per_second": result.avg_tokens_per_second,
        "avg_energy_per_token_j": result.avg_energy_per_token_j,
        "ttft_p50_ms": lat.ttft_median_ms if lat else None,
        "ttft_p95_ms": lat.ttft_p95_ms if lat else None,
        "e2e_latency_p50_ms": e2e.e2e_latency_median_ms if e2e else None,
        "e2e_latency_p95_ms": e2e.e2e_latency_p95_ms if e2e else None,
    }


__all__ = [
    "PARTIAL_SUFFIX",
    "RESULT_SUFFIX",
    "ResultFile",
    "Shown",
    "identity_of",
    "key_figures",
    "list_results",
    "load_result",
    "parse_result",
    "parse_result_name",
    "preferred",
    "read_regular_file",
    "results_to_show",
]
