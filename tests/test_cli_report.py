"""``energy-ledger report`` and ``replay --report``: the report through the command line.

Every test runs the real command in-process (``cli(...)``) on a simulated root and reads back
both what it printed and the files it wrote.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from energy_ledger.cli import cli
from energy_ledger.pipeline import replay_root
from energy_ledger.simulate import simulate

pytestmark = pytest.mark.usefixtures("restore_logging")

HINT = "pip install 'energy-ledger[report]'"
IDS = ["sim-0000", "sim-0001"]


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any], str]:
    """Run a command with ``--json``: its exit code, its parsed stdout, its stderr."""
    code = cli(*args, "--json")
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


def pages_in(root: Path) -> list[str]:
    """The experiment pages in ``aggregated/``, sorted."""
    return sorted(p.name for p in (root / "aggregated").glob("*.report.html"))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """Two complete, emitted experiments of one process each (no page yet)."""
    root = tmp_path / "results"
    simulate(root, experiments=2, processes=1, requests=20)
    replay_root(root)
    return root


@pytest.fixture
def no_report_libraries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the report's libraries look uninstalled (``report.extra`` asks importlib)."""
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
        return None if name == "matplotlib" else real(name, *args, **kwargs)

    monkeypatch.setattr("importlib.util.find_spec", find_spec)


class TestExperimentPage:
    """``report ROOT/raw/<id>`` writes that experiment's page."""

    def test_json_and_the_file(self, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Exit 0; the JSON names the page, says it changed and is not partial; written again
        (without --json) it is "up to date"."""
        code, shown, err = run_json(capsys, "report", str(root / "raw" / "sim-0000"))
        page = root / "aggregated" / "sim-0000.report.html"
        assert (code, shown["exit_code"]) == (0, 0), err
        assert shown["page"] == str(page)
        assert shown["changed"] is True
        assert shown["partial"] is False
        assert shown["figures"] == []
        assert page.is_file()
        assert pages_in(root) == ["sim-0000.report.html"]
        assert cli("report", str(root / "raw" / "sim-0000")) == 0
        assert f"up to date: {page}" in capsys.readouterr().out

    def test_figures(self, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """``--svg --png``: the figure files listed exist, an SVG and a PNG of each figure."""
        code, shown, err = run_json(
            capsys, "report", str(root / "raw" / "sim-0000"), "--svg", "--png"
        )
        assert code == 0, err
        figures = [Path(f) for f in shown["figures"]]
        assert figures and all(f.is_file() for f in figures)
        assert {f.parent for f in figures} == {root / "aggregated" / "figures" / "sim-0000"}
        stems = {f.stem for f in figures}
        assert {f.name for f in figures} == {f"{s}.{e}" for s in stems for e in ("svg", "png")}

    def test_crashed_experiment(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A crashed experiment gets a PARTIAL page: exit 1, said in text and in the JSON."""
        simulate(tmp_path, experiments=1, processes=2, requests=20, crash=1)
        folder = tmp_path / "raw" / "sim-0000"
        page = tmp_path / "aggregated" / "sim-0000.report.html"
        assert cli("report", str(folder)) == 1
        shown_text = capsys.readouterr().out
        assert f"wrote {page}" in shown_text and "PARTIAL" in shown_text
        assert "PARTIAL" in page.read_text()
        code, shown, _ = run_json(capsys, "report", str(folder))
        assert (code, shown["exit_code"], shown["partial"]) == (1, 1, True)
        assert shown["page"] == str(page)
        assert shown["changed"] is False

    @pytest.mark.parametrize("where", ["nope", "raw/nope", "nowhere/raw/x"])
    def test_missing_path(self, root: Path, capsys: pytest.CaptureFixture[str], where: str) -> None:
        """A path that does not exist: exit 2, a one-line message naming it, no traceback."""
        path = root / where
        assert cli("report", str(path), "--json") == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert str(path) in captured.err
        assert "Traceback" not in captured.err
        assert pages_in(root) == []

    def test_raw_folder_says_what_was_meant(
        self, root: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """``report ROOT/raw`` is refused with exit 2 and a hint at an experiment folder."""
        assert cli("report", str(root / "raw")) == 2
        err = capsys.readouterr().err
        assert "did you mean" in err and str(root / "raw" / "sim-0000") in err


class TestComparisonPage:
    """``report ROOT`` writes the comparison page; ``--experiments`` every page as well."""

    def test_root(self, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Exit 0; the comparison is written; no experiment page is."""
        code, shown, err = run_json(capsys, "report", str(root))
        assert code == 0, err
        comparison = root / "aggregated" / "report.html"
        assert shown["comparison"]["page"] == str(comparison)
        assert shown["comparison"]["changed"] is True
        assert shown["pages"] == [] and shown["problems"] == []
        text = comparison.read_text()
        assert all(f'data-experiment="{i}"' in text for i in IDS)
        assert pages_in(root) == []

    def test_experiments_flag(self, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """``--experiments`` writes a page per emitted experiment, and the rows link to them."""
        code, shown, err = run_json(capsys, "report", str(root), "--experiments")
        assert code == 0, err
        expected = [str(root / "aggregated" / f"{i}.report.html") for i in IDS]
        assert [p["page"] for p in shown["pages"]] == expected
        assert all(p["changed"] for p in shown["pages"])
        assert pages_in(root) == [f"{i}.report.html" for i in IDS]
        text = (root / "aggregated" / "report.html").read_text()
        assert all(f'href="{i}.report.html"' in text for i in IDS)

    def test_unreadable_result_is_exit_1(
        self, root: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A corrupt result file: the page is still written, the problem named, exit 1."""
        (root / "aggregated" / "bad.json").write_text("{{{ garbage")
        code, shown, _ = run_json(capsys, "report", str(root))
        assert (code, shown["exit_code"]) == (1, 1)
        assert len(shown["problems"]) == 1 and "bad.json" in shown["problems"][0]
        assert Path(shown["comparison"]["page"]).is_file()
        assert cli("report", str(root)) == 1
        assert "bad.json" in capsys.readouterr().err


class TestMissingLibraries:
    """Without matplotlib, the commands that write reports say what to install (exit 2)."""

    @pytest.mark.parametrize(
        "args",
        [("report", "raw/sim-0000"), ("report", ""), ("replay", "", "--report")],
        ids=["report-experiment", "report-root", "replay-report"],
    )
    @pytest.mark.usefixtures("no_report_libraries")
    def test_pip_hint(
        self, root: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...]
    ) -> None:
        """Exit 2, "matplotlib" and the pip command in the message; nothing written at all."""
        before = sorted(p.name for p in (root / "aggregated").iterdir())
        (root / "aggregated" / "sim-0000.json").unlink()  # replay would write it back
        command, where, *flags = args
        assert cli(command, str(root / where), *flags) == 2
        err = capsys.readouterr().err
        assert HINT in err and "matplotlib" in err and "Traceback" not in err
        after = sorted(p.name for p in (root / "aggregated").iterdir())
        assert after == [n for n in before if n != "sim-0000.json"]

    def test_through_missing_libraries(
        self, root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Both libraries missing (``extra.missing_libraries`` patched): both are named."""
        monkeypatch.setattr(
            "energy_ledger.report.extra.missing_libraries", lambda: ["matplotlib", "jinja2"]
        )
        assert cli("report", str(root)) == 2
        err = capsys.readouterr().err
        assert "matplotlib and jinja2" in err and HINT in err
        assert not (root / "aggregated" / "report.html").exists()


class TestReplayReport:
    """``replay --report`` writes the pages of the results it wrote, then the comparison."""

    def test_pages_then_nothing_new(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """First run: a page per result and the comparison. Second run: no page, since every
        result is up to date and has its page; a deleted page is written again."""
        simulate(tmp_path, experiments=2, processes=1, requests=20)
        code, shown, err = run_json(capsys, "replay", str(tmp_path), "--report")
        assert code == 0, err
        assert shown["written"] == 2
        reports = shown["reports"]
        expected = [str(tmp_path / "aggregated" / f"{i}.report.html") for i in IDS]
        assert sorted(reports["pages"]) == expected
        assert reports["comparison"] == str(tmp_path / "aggregated" / "report.html")
        assert reports["problems"] == []
        assert all(Path(p).is_file() for p in expected)
        mtimes = {p: Path(p).stat().st_mtime_ns for p in expected}

        code, shown, _ = run_json(capsys, "replay", str(tmp_path), "--report")
        assert code == 0
        assert shown["up_to_date"] == 2 and shown["written"] == 0
        assert shown["reports"]["pages"] == []
        assert shown["reports"]["comparison"] == str(tmp_path / "aggregated" / "report.html")
        assert {p: Path(p).stat().st_mtime_ns for p in expected} == mtimes

        Path(expected[1]).unlink()
        code, shown, _ = run_json(capsys, "replay", str(tmp_path), "--report")
        assert code == 0
        assert shown["reports"]["pages"] == [expected[1]]
        assert Path(expected[1]).is_file()

    def test_pending_experiment_gets_no_page(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A crashed experiment has no result for replay, so no page; exit 1 (not complete)."""
        simulate(tmp_path, experiments=1, processes=2, requests=20, crash=1)
        code, shown, _ = run_json(capsys, "replay", str(tmp_path), "--report")
        assert code == 1
        assert shown["reports"]["pages"] == []
        assert Path(shown["reports"]["comparison"]).is_file()
        assert pages_in(tmp_path) == []

    def test_without_report_flag(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Plain ``replay`` writes no page and has no "reports" key."""
        simulate(tmp_path, experiments=1, processes=1, requests=10)
        code, shown, _ = run_json(capsys, "replay", str(tmp_path))
        assert code == 0
        assert "reports" not in shown
        assert not (tmp_path / "aggregated" / "report.html").exists()
