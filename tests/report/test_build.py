"""Tests of ``report.build``: pages written from simulated experiments into a real root.

The numbers a page shows are read back from its markup (``data-key``/``data-value`` and table
cells) and compared with the simulator's ground truth and with the result files the pipeline
writes, computed here independently. Safety tests put links, FIFOs and foreign folders where
the pages go and check that nothing is written through them.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import stat
import threading
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from energy_ledger.exceptions import LedgerError, UnsafePathError
from energy_ledger.pipeline import recover_experiment, replay_root
from energy_ledger.report.build import (
    Written,
    emitted_ids,
    page_name,
    write_comparison_report,
    write_experiment_report,
    write_root_reports,
)
from energy_ledger.simulate import ExperimentTruth, simulate

SEED = 7
JOIN_TIMEOUT_SEC = 30.0


class PageNumbers(HTMLParser):
    """What a page says in machine-readable form.

    ``figures``: ``data-key`` -> ``data-value`` of the key-figure cards. ``gpus``: the
    ``data-value`` cells of each ``data-gpu`` row. ``rows``: the comparison table, each
    ``data-experiment`` row as ``{data-col: data-value}`` (columns without a value omitted),
    with its class list and links. ``links``: every ``href``.
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.figures: dict[str, str] = {}
        self.gpus: dict[str, list[str]] = {}
        self.columns: list[str] = []
        self.rows: dict[str, dict[str, Any]] = {}
        self.links: list[str] = []
        self._gpu: str | None = None
        self._row: str | None = None
        self._cell = 0

    def handle_starttag(self, tag: str, attrs_list: list[tuple[str, str | None]]) -> None:
        attrs = {k: v or "" for k, v in attrs_list}
        if "href" in attrs:
            self.links.append(attrs["href"])
            if self._row is not None:
                self.rows[self._row]["links"].append(attrs["href"])
        if "data-key" in attrs:
            self.figures[attrs["data-key"]] = attrs["data-value"]
        if tag == "th" and "data-col" in attrs:
            self.columns.append(attrs["data-col"])
        if tag == "tr":
            self._gpu = attrs.get("data-gpu")
            self._row = attrs.get("data-experiment")
            self._cell = 0
            if self._gpu is not None:
                self.gpus[self._gpu] = []
            if self._row is not None:
                self.rows[self._row] = {
                    "class": attrs.get("class", "").split(),
                    "links": [],
                    "values": {},
                }
        if tag == "td":
            if self._gpu is not None and "data-value" in attrs:
                self.gpus[self._gpu].append(attrs["data-value"])
            if self._row is not None:
                if "data-value" in attrs and self._cell < len(self.columns):
                    self.rows[self._row]["values"][self.columns[self._cell]] = attrs["data-value"]
                self._cell += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self._gpu = self._row = None


def numbers(page: Path) -> PageNumbers:
    parser = PageNumbers()
    parser.feed(page.read_text(encoding="utf-8"))
    parser.close()
    return parser


def make_root(root: Path, **kwargs: Any) -> list[ExperimentTruth]:
    """Simulate into ``root`` and replay it (complete experiments get their result)."""
    truths = simulate(root, seed=SEED, **kwargs)
    replay_root(root)
    return truths


def copy_root(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative name -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def sweep_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[ExperimentTruth]]:
    """Two complete experiments of two processes (a sweep), replayed; not to be modified."""
    root = tmp_path_factory.mktemp("sweep") / "results"
    return root, make_root(root, experiments=2, processes=2, requests=50, sweep=True)


@pytest.fixture(scope="module")
def sweep_page(sweep_root: tuple[Path, list[ExperimentTruth]]) -> Written:
    """The page of ``sim-0000`` written once into ``sweep_root`` (tests only read it)."""
    root, _ = sweep_root
    return write_experiment_report(root / "raw" / "sim-0000")


@pytest.fixture(scope="module")
def crashed_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[ExperimentTruth]]:
    """One experiment whose second process died without a marker (nothing emitted)."""
    root = tmp_path_factory.mktemp("crashed") / "results"
    return root, make_root(root, experiments=1, processes=2, requests=50, crash=1)


@pytest.fixture
def root(tmp_path: Path, sweep_page: Written) -> Path:
    """A private copy of ``sweep_root``: both results, and the page of ``sim-0000`` only."""
    return copy_root(sweep_page.page.parents[1], tmp_path / "results")


class TestExperimentPage:
    """``write_experiment_report`` on a complete experiment."""

    def test_written_where_expected(self, sweep_page: Written) -> None:
        """The page is ``aggregated/<id>.report.html``; the first write reports a change."""
        assert sweep_page.changed is True
        assert sweep_page.partial is False
        assert sweep_page.figures == ()
        assert sweep_page.page.name == page_name("sim-0000") == "sim-0000.report.html"
        assert sweep_page.page.parent.name == "aggregated"
        assert sweep_page.page.read_bytes().startswith(b"<!")

    def test_second_run_changes_nothing(self, root: Path, sweep_page: Written) -> None:
        """Written again: ``changed`` False, the same file (inode, mtime) and the same bytes."""
        page = root / "aggregated" / sweep_page.page.name
        os.utime(page, ns=(1_000_000_000, 1_000_000_000))
        before = os.stat(page)
        data = page.read_bytes()
        assert data == sweep_page.page.read_bytes()
        again = write_experiment_report(root / "raw" / "sim-0000")
        assert again.page == page
        assert again.changed is False
        after = os.stat(page)
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
        assert page.read_bytes() == data

    def test_changed_page_is_rewritten(self, root: Path, sweep_page: Written) -> None:
        """A page whose bytes differ (edited, truncated) is replaced with the right ones."""
        page = root / "aggregated" / sweep_page.page.name
        page.write_bytes(sweep_page.page.read_bytes()[:-10])
        again = write_experiment_report(root / "raw" / "sim-0000")
        assert again.changed is True
        assert page.read_bytes() == sweep_page.page.read_bytes()

    def test_same_bytes_from_another_root(self, tmp_path: Path, sweep_page: Written) -> None:
        """A root simulated separately with the same seed gives a byte-identical page.

        The page holds no absolute path (neither root's path appears in it), so it can be
        archived or moved with the data.
        """
        other = tmp_path / "elsewhere" / "results"
        make_root(other, experiments=2, processes=2, requests=50, sweep=True)
        written = write_experiment_report(other / "raw" / "sim-0000")
        page = written.page.read_bytes()
        assert page == sweep_page.page.read_bytes()
        for folder in (other, sweep_page.page.parents[1]):
            assert str(folder).encode() not in page

    def test_key_figures_match_truth_and_result(
        self, sweep_root: tuple[Path, list[ExperimentTruth]], sweep_page: Written
    ) -> None:
        """Total energy, J per output token, requests and tokens equal the simulator's truth;
        the values are the result JSON's own, written as ``repr`` of the float."""
        root, truths = sweep_root
        truth = truths[0]
        result = json.loads((root / "aggregated" / "sim-0000.json").read_bytes())
        shown = numbers(sweep_page.page).figures
        output_tokens = sum(p.output_tokens for p in truth.processes)
        assert shown["total_energy_j"] == repr(result["total_energy_j"])
        assert float(shown["total_energy_j"]) == pytest.approx(truth.energy_j, rel=1e-12)
        assert float(shown["energy_per_output_token_j"]) == pytest.approx(
            truth.energy_j / output_tokens, rel=1e-12
        )
        assert int(shown["requests"]) == len(truth.latencies_ms) == 100
        assert int(shown["output_tokens"]) == output_tokens
        assert shown["energy_adjusted_j"] == repr(result["energy_adjusted_j"])
        e2e = result["extended_metrics"]["request_latency"]
        assert shown["e2e_latency_p50_ms"] == repr(e2e["e2e_latency_median_ms"])

    def test_energy_per_gpu_matches_the_counters(
        self, sweep_root: tuple[Path, list[ExperimentTruth]], sweep_page: Written
    ) -> None:
        """Each GPU row's energy is its counter's end minus start, in joules."""
        _, truths = sweep_root
        gpus = numbers(sweep_page.page).gpus
        expected = {
            p.gpu_uuid: (p.counter_end_mj - p.counter_start_mj) / 1000.0
            for p in truths[0].processes
        }
        assert len(gpus) == len(expected) == 2
        for key, cells in gpus.items():
            (uuid,) = [u for u in expected if key.endswith(u)]
            assert float(cells[0]) == pytest.approx(expected[uuid], rel=1e-12)

    def test_not_partial_on_a_complete_page(self, sweep_page: Written) -> None:
        """A complete experiment's page carries no PARTIAL badge."""
        assert 'id="partial-badge"' not in sweep_page.page.read_text()


class TestPartialPage:
    """A crashed experiment still gets a page, marked partial, with recover's numbers."""

    def test_partial_page_equals_recover(
        self, tmp_path: Path, crashed_root: tuple[Path, list[ExperimentTruth]]
    ) -> None:
        """``partial`` is True, the page says PARTIAL, and its numbers are the partial.json's."""
        root = copy_root(crashed_root[0], tmp_path / "results")
        truth = crashed_root[1][0]
        written = write_experiment_report(root / "raw" / "sim-0000")
        assert written.partial is True
        assert written.changed is True
        text = written.page.read_text()
        assert "PARTIAL" in text
        assert not (root / "aggregated" / "sim-0000.partial.json").exists()  # page writes none

        recovery = recover_experiment(root / "raw" / "sim-0000")
        assert recovery.partial is True
        assert recovery.path == root / "aggregated" / "sim-0000.partial.json"
        result = json.loads(recovery.path.read_bytes())
        shown = numbers(written.page).figures
        assert shown["total_energy_j"] == repr(result["total_energy_j"])
        assert shown["energy_adjusted_j"] == repr(result["energy_adjusted_j"])
        # Every request the crashed process logged before it died is counted.
        assert int(shown["requests"]) == len(truth.latencies_ms)
        assert len(truth.processes[1].latencies_ms) > 0
        # The finished process's GPU has its counter energy; the crashed one's is on the page.
        finished = truth.processes[0]
        assert (
            float(shown["total_energy_j"])
            > (finished.counter_end_mj - finished.counter_start_mj) / 1000.0
        )

    def test_partial_row_in_the_comparison(
        self, tmp_path: Path, crashed_root: tuple[Path, list[ExperimentTruth]]
    ) -> None:
        """Once recovered, the partial result is a row of the comparison, marked partial."""
        root = copy_root(crashed_root[0], tmp_path / "results")
        recover_experiment(root / "raw" / "sim-0000")
        assert emitted_ids(root) == ["sim-0000"]
        written = write_comparison_report(root)
        assert written.problems == ()
        rows = numbers(written.page).rows
        assert list(rows) == ["sim-0000"]
        assert "row-partial" in rows["sim-0000"]["class"]
        assert rows["sim-0000"]["links"] == []  # no experiment page was written


class TestFigureFiles:
    """``png=True``/``svg=True`` write each figure as its own file as well."""

    def test_png_and_svg(self, root: Path) -> None:
        """Every figure has an SVG that parses as SVG and a PNG; none outside its folder."""
        written = write_experiment_report(root / "raw" / "sim-0001", png=True, svg=True)
        folder = root / "aggregated" / "figures" / "sim-0001"
        assert written.figures, "no figure files written"
        assert {p.parent for p in written.figures} == {folder}
        assert sorted(written.figures) == sorted(folder.iterdir())
        svgs = {p.stem for p in written.figures if p.suffix == ".svg"}
        pngs = {p.stem for p in written.figures if p.suffix == ".png"}
        assert svgs == pngs and len(svgs) >= 3
        for path in written.figures:
            data = path.read_bytes()
            if path.suffix == ".png":
                assert data.startswith(b"\x89PNG\r\n\x1a\n")
            else:
                assert ET.fromstring(data).tag == "{http://www.w3.org/2000/svg}svg"
        # The inline figures of the page are the same drawings as the SVG files.
        page = written.page.read_text()
        for name in svgs:
            assert f'data-figure="{name}"' in page

    def test_svg_only(self, root: Path) -> None:
        """``svg=True`` alone writes SVG files and no PNG; without either, no folder at all."""
        assert not (root / "aggregated" / "figures").exists()  # sim-0000's page made none
        written = write_experiment_report(root / "raw" / "sim-0000", svg=True)
        assert written.changed is False  # the page does not depend on the figure files
        assert written.figures and {p.suffix for p in written.figures} == {".svg"}

    def test_comparison_figures(self, root: Path) -> None:
        """The comparison page's figures go to ``aggregated/figures/_comparison/``."""
        written = write_comparison_report(root, png=True, svg=True)
        folder = root / "aggregated" / "figures" / "_comparison"
        assert written.figures and {p.parent for p in written.figures} == {folder}
        for path in written.figures:
            assert path.is_file()
            if path.suffix == ".png":
                assert path.read_bytes().startswith(b"\x89PNG")
            else:
                ET.fromstring(path.read_bytes())


def _outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "keep.txt").write_bytes(b"not yours\n")
    return folder


class TestSafety:
    """Nothing is written through a link, outside the root, or into something not a file."""

    def test_aggregated_is_a_link(self, tmp_path: Path, root: Path) -> None:
        """``aggregated/`` linked to a folder outside the root: both pages are refused."""
        outside = _outside(tmp_path)
        for f in (root / "aggregated").iterdir():
            if f.is_file():
                shutil.copy2(f, outside / f.name)
        shutil.rmtree(root / "aggregated")
        (root / "aggregated").symlink_to(outside, target_is_directory=True)
        before = snapshot(outside)
        with pytest.raises(UnsafePathError, match="symbolic link"):
            write_experiment_report(root / "raw" / "sim-0001")
        with pytest.raises(UnsafePathError, match="symbolic link"):
            write_comparison_report(root)
        assert snapshot(outside) == before
        assert sorted(p.name for p in outside.iterdir()) == sorted(before)

    @pytest.mark.parametrize("name", ["sim-0001.report.html", "report.html"])
    def test_page_is_a_link(self, tmp_path: Path, root: Path, name: str) -> None:
        """A link where a page goes is refused; the file it points to is untouched."""
        outside = _outside(tmp_path)
        link = root / "aggregated" / name
        link.symlink_to(outside / "keep.txt")
        with pytest.raises(UnsafePathError):
            if name == "report.html":
                write_comparison_report(root)
            else:
                write_experiment_report(root / "raw" / "sim-0001")
        assert link.is_symlink()
        assert (outside / "keep.txt").read_bytes() == b"not yours\n"
        assert sorted(p.name for p in outside.iterdir()) == ["keep.txt"]

    @pytest.mark.parametrize(
        "linked", ["figures", "figures/sim-0001", "figures/sim-0001/energy-per-gpu.svg"]
    )
    def test_figure_paths_are_links(self, tmp_path: Path, root: Path, linked: str) -> None:
        """A link at the figures folder, the experiment's figure folder or a figure file is
        refused, and nothing lands where it points."""
        outside = _outside(tmp_path)
        link = root / "aggregated" / linked
        link.parent.mkdir(parents=True, exist_ok=True)
        if linked.endswith(".svg"):
            link.symlink_to(outside / "keep.txt")
        else:
            link.symlink_to(outside, target_is_directory=True)
        with pytest.raises(UnsafePathError):
            write_experiment_report(root / "raw" / "sim-0001", svg=True)
        assert link.is_symlink()
        assert snapshot(outside) == {"keep.txt": b"not yours\n"}

    @pytest.mark.parametrize("name", ["sim-0001.report.html", "report.html"])
    def test_fifo_where_the_page_goes(self, root: Path, name: str) -> None:
        """A FIFO at the page's path: the call returns (no reader is waited for), and either
        refuses with a ``LedgerError`` or leaves a regular file holding a whole page."""
        fifo = root / "aggregated" / name
        os.mkfifo(fifo)
        outcome: list[object] = []

        def target() -> None:
            try:
                if name == "report.html":
                    outcome.append(write_comparison_report(root))
                else:
                    outcome.append(write_experiment_report(root / "raw" / "sim-0001"))
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        thread.join(JOIN_TIMEOUT_SEC)
        try:
            assert not thread.is_alive(), "writing the page blocked on a FIFO"
        finally:
            # Unblock a writer stuck opening the FIFO, so a failure does not hang the run.
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
        (done,) = outcome
        mode = os.lstat(fifo).st_mode
        if isinstance(done, BaseException):
            assert isinstance(done, LedgerError), done
            assert str(fifo) in str(done)
            assert stat.S_ISFIFO(mode)
        else:
            assert isinstance(done, Written)
            assert stat.S_ISREG(mode)
            assert fifo.read_bytes().rstrip().endswith(b"</html>")
        leftovers = [p.name for p in (root / "aggregated").iterdir() if p.name.endswith(".tmp")]
        assert leftovers == []


class TestComparison:
    """``write_comparison_report`` over every result file of ``aggregated/``."""

    def test_rows_and_links(self, root: Path, sweep_page: Written) -> None:
        """One row per result, its numbers the result's; a link only where a page exists."""
        written = write_comparison_report(root)
        assert written.page == root / "aggregated" / "report.html"
        assert written.changed is True
        assert written.problems == ()
        parsed = numbers(written.page)
        assert sorted(parsed.rows) == ["sim-0000", "sim-0001"]
        assert parsed.rows["sim-0000"]["links"] == ["sim-0000.report.html"]
        assert parsed.rows["sim-0001"]["links"] == []
        assert "sim-0001.report.html" not in parsed.links
        for experiment_id, row in parsed.rows.items():
            result = json.loads((root / "aggregated" / f"{experiment_id}.json").read_bytes())
            assert row["values"]["total_energy_j"] == repr(result["total_energy_j"])
            output_tokens = sum(
                p["inference_metrics"]["output_tokens"] for p in result["process_results"]
            )
            assert math.isclose(
                float(row["values"]["energy_per_output_token_j"]),
                result["total_energy_j"] / output_tokens,
                rel_tol=1e-12,
            )
        assert write_comparison_report(root).changed is False

    def test_corrupt_result_is_a_problem_not_a_failure(self, root: Path) -> None:
        """A garbage ``aggregated/bad.json`` is named in ``problems`` and on the page; the
        other rows are all still there."""
        (root / "aggregated" / "bad.json").write_bytes(b"{not json at all\x00\xff")
        written = write_comparison_report(root)
        assert len(written.problems) == 1
        assert "bad.json" in written.problems[0]
        parsed = numbers(written.page)
        assert sorted(parsed.rows) == ["sim-0000", "sim-0001"]
        assert "bad.json" in written.page.read_text()

    def test_progress_counts_every_file(self, root: Path) -> None:
        """``progress(done, total)`` is called once per result file, the last with (n, n),
        unreadable files included."""
        (root / "aggregated" / "zzz.json").write_text("garbage")
        calls: list[tuple[int, int]] = []
        write_comparison_report(root, progress=lambda n, total: calls.append((n, total)))
        assert calls == [(1, 3), (2, 3), (3, 3)]

    def test_progress_without_problems(self, root: Path) -> None:
        """With every file readable, ``progress`` goes 1..n of n."""
        calls: list[tuple[int, int]] = []
        write_comparison_report(root, progress=lambda n, total: calls.append((n, total)))
        assert calls == [(1, 2), (2, 2)]

    def test_root_without_results(self, tmp_path: Path) -> None:
        """A root with nothing emitted still gets a page, with no rows."""
        simulate(tmp_path, experiments=1, processes=1, requests=5, crash=1)
        written = write_comparison_report(tmp_path)
        assert written.page.is_file()
        assert numbers(written.page).rows == {}


class TestRootReports:
    """``write_root_reports`` and ``emitted_ids``."""

    def test_emitted_ids(self, root: Path) -> None:
        """The experiments with a result file, sorted."""
        assert emitted_ids(root) == ["sim-0000", "sim-0001"]

    def test_a_failing_page_does_not_stop_the_others(self, root: Path) -> None:
        """An id with no folder is a problem; the next page and the comparison are written."""
        done = write_root_reports(root, ["nope", "sim-0001"])
        assert [w.page.name for w in done.pages] == ["sim-0001.report.html"]
        assert len(done.problems) == 1 and done.problems[0].startswith("nope: ")
        assert done.comparison is not None and done.comparison.page.is_file()
        rows = numbers(done.comparison.page).rows
        assert rows["sim-0001"]["links"] == ["sim-0001.report.html"]


class TestMissingFolder:
    """An experiment folder that does not exist is a ``LedgerError`` naming it."""

    @pytest.mark.parametrize("where", ["raw/nope", "nowhere/raw/x"])
    def test_missing(self, root: Path, where: str) -> None:
        """Nothing is written, and the message holds the path."""
        before = sorted(p.name for p in (root / "aggregated").iterdir())
        path = root / where
        with pytest.raises(LedgerError) as info:
            write_experiment_report(path)
        assert str(path) in str(info.value)
        assert sorted(p.name for p in (root / "aggregated").iterdir()) == before
