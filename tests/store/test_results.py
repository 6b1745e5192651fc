"""Tests for energy_ledger.store.results: which files are results, and reading them back."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from energy_ledger.exceptions import LedgerError
from energy_ledger.pipeline import recover_experiment, replay_root
from energy_ledger.simulate import simulate
from energy_ledger.store.layout import ResultsLayout
from energy_ledger.store.results import (
    list_results,
    load_result,
    parse_result_name,
    preferred,
    read_regular_file,
    results_to_show,
)


@pytest.mark.parametrize(
    ("name", "parsed"),
    [
        ("exp-1.json", ("exp-1", False)),
        ("exp-1.partial.json", ("exp-1", True)),
        ("a.b.json", ("a.b", False)),
        (".results.csv.sources", None),
        (".exp-1.json.x1y2.tmp", None),
        (".hidden.json", None),
        ("results.csv", None),
        ("notes.txt", None),
        ("bad name.json", None),
        ("x..y.json", None),
        (".json", None),
    ],
)
def test_parse_result_name(name: str, parsed: tuple[str, bool] | None) -> None:
    """Only ``<valid id>.json`` and ``<valid id>.partial.json`` are result files."""
    assert parse_result_name(name) == parsed


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A root with two complete results and one partial (``crashed-0000``)."""
    simulate(tmp_path, experiments=2, processes=2, requests=5, seed=2)
    simulate(tmp_path, processes=2, requests=5, seed=2, crash=1, prefix="crashed")
    replay_root(tmp_path)
    recover_experiment(tmp_path / "raw" / "crashed-0000")
    return tmp_path


class TestListing:
    """``list_results`` lists regular result files only; ``preferred`` picks one per id."""

    def test_lists_results_in_id_order(self, root: Path) -> None:
        """The two complete results and the partial one, nothing hidden, nothing else."""
        found = list_results(ResultsLayout.at(root))
        assert [(f.experiment_id, f.partial) for f in found] == [
            ("crashed-0000", True),
            ("sim-0000", False),
            ("sim-0001", False),
        ]

    def test_skips_links_and_fifos(
        self, root: Path, tmp_path_factory: pytest.TempPathFactory
    ) -> None:
        """A link and a FIFO named like results are skipped (and never opened)."""
        outside = tmp_path_factory.mktemp("outside") / "x.json"
        outside.write_bytes((root / "aggregated" / "sim-0000.json").read_bytes())
        (root / "aggregated" / "linked.json").symlink_to(outside)
        os.mkfifo(root / "aggregated" / "fifo.json")
        names = [f.path.name for f in list_results(ResultsLayout.at(root))]
        assert "linked.json" not in names and "fifo.json" not in names
        assert len(names) == 3

    def test_preferred_takes_the_complete_result(self, root: Path) -> None:
        """With both files for one id, ``preferred`` keeps ``<id>.json``."""
        aggregated = root / "aggregated"
        (aggregated / "sim-0000.partial.json").write_bytes(
            (aggregated / "crashed-0000.partial.json").read_bytes()
        )
        chosen = preferred(list_results(ResultsLayout.at(root)))
        assert [(f.experiment_id, f.partial) for f in chosen] == [
            ("crashed-0000", True),
            ("sim-0000", False),
            ("sim-0001", False),
        ]


class TestReading:
    """Reading a result gives the model, or a message naming the file."""

    def test_fifo_is_refused_without_hanging(self, tmp_path: Path) -> None:
        """A FIFO is opened non-blocking and refused as not a regular file."""
        fifo = tmp_path / "x.json"
        os.mkfifo(fifo)
        with pytest.raises(LedgerError, match="not a regular file"):
            read_regular_file(fifo)

    def test_link_is_refused_unless_followed(self, root: Path, tmp_path: Path) -> None:
        """A link is refused by default and read when the user named it (``follow_links``)."""
        link = tmp_path / "link.json"
        link.symlink_to(root / "aggregated" / "sim-0000.json")
        with pytest.raises(LedgerError, match="cannot read"):
            load_result(link)
        assert load_result(link, follow_links=True).experiment_id == "sim-0000"

    def test_not_a_result(self, tmp_path: Path) -> None:
        """A JSON file of another shape names the file and the first problem."""
        path = tmp_path / "x.json"
        path.write_text('{"a": 1}')
        with pytest.raises(LedgerError, match=r"x\.json: not an ExperimentResult \(\d+ problems"):
            load_result(path)


class TestShow:
    """``results_to_show`` gives each experiment once and says what is wrong with a path."""

    def test_each_experiment_once_complete_first(self, root: Path) -> None:
        """A stale partial beside a complete result is not shown."""
        aggregated = root / "aggregated"
        (aggregated / "sim-0000.partial.json").write_bytes(
            (aggregated / "crashed-0000.partial.json").read_bytes()
        )
        shown = results_to_show(root)
        assert [p.name for p, _r in shown.results] == [
            "crashed-0000.partial.json",
            "sim-0000.json",
            "sim-0001.json",
        ]

    def test_unreadable_file_is_a_problem_not_the_end(self, root: Path) -> None:
        """A broken result is listed; the others are still shown."""
        (root / "aggregated" / "sim-0001.json").write_text("{")
        shown = results_to_show(root)
        assert [p.name for p, _r in shown.results] == ["crashed-0000.partial.json", "sim-0000.json"]
        (problem,) = shown.problems
        assert "sim-0001.json: not an ExperimentResult" in problem

    @pytest.mark.parametrize(
        ("where", "needle"),
        [
            ("raw", "did you mean {root}?"),
            ("aggregated", "did you mean {root}?"),
            ("raw/sim-0000", "did you mean {root}?"),
        ],
    )
    def test_hints(self, root: Path, where: str, needle: str) -> None:
        """A folder inside the root is an error that names the root."""
        with pytest.raises(LedgerError, match=needle.format(root=root).replace("?", r"\?")):
            results_to_show(root / where)

    def test_root_without_results(self, tmp_path: Path) -> None:
        """A root with nothing aggregated yet says to run replay."""
        (tmp_path / "raw").mkdir()
        with pytest.raises(LedgerError, match="no aggregated results"):
            results_to_show(tmp_path)
