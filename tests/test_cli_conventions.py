"""Command-line conventions scripts rely on: exit codes, hints, --version, --json, help texts.

Every case runs the real command (``cli(*args)``) on a real root written by the simulator.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from energy_ledger import __version__
from energy_ledger.cli import app, cli
from energy_ledger.simulate import simulate, size_warning

EXP = "sim-0000"
README = Path(__file__).resolve().parents[1] / "README.md"

pytestmark = pytest.mark.usefixtures("restore_logging")


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the CLI; return its exit code, stdout and stderr (checked for tracebacks)."""
    code = cli(*args)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return code, captured.out, captured.err


@pytest.fixture
def complete(tmp_path: Path) -> Path:
    """A root with one complete 2-process experiment, replayed (its result written)."""
    simulate(tmp_path / "complete", processes=2, requests=6, seed=3)
    assert cli("replay", "-q", str(tmp_path / "complete")) == 0
    return tmp_path / "complete"


@pytest.fixture
def crashed(tmp_path: Path) -> Path:
    """A root whose only experiment lost process 1 (no marker)."""
    simulate(tmp_path / "crashed", processes=2, requests=6, seed=3, crash=1)
    return tmp_path / "crashed"


def _linked_result(tmp_path: Path) -> Path:
    root = tmp_path / "linked"
    simulate(root, processes=2, requests=6, seed=3)
    (root / "aggregated").mkdir()
    (tmp_path / "target.json").write_text("{}")
    (root / "aggregated" / f"{EXP}.json").symlink_to(tmp_path / "target.json")
    return root


def _partial_file(root: Path) -> str:
    cli("recover", str(root / "raw" / EXP))
    return str(root / "aggregated" / f"{EXP}.partial.json")


CASES: list[tuple[str, Callable[[Path, Path, Path], list[str]], int]] = [
    ("replay, all complete", lambda c, _x, _t: ["replay", str(c)], 0),
    ("replay, one pending", lambda _c, x, _t: ["replay", str(x)], 1),
    ("replay, result not writable", lambda _c, _x, t: ["replay", str(_linked_result(t))], 2),
    ("replay, ROOT/raw", lambda c, _x, _t: ["replay", str(c / "raw")], 2),
    ("status, all emitted", lambda c, _x, _t: ["status", str(c)], 0),
    ("status, one pending", lambda _c, x, _t: ["status", str(x)], 1),
    ("status, no raw/", lambda _c, _x, t: ["status", str(t)], 2),
    ("validate, complete", lambda c, _x, _t: ["validate", str(c / "raw" / EXP)], 0),
    ("validate, pending", lambda _c, x, _t: ["validate", str(x / "raw" / EXP)], 1),
    ("validate, ROOT", lambda c, _x, _t: ["validate", str(c)], 2),
    ("recover, complete", lambda c, _x, _t: ["recover", str(c / "raw" / EXP)], 0),
    ("recover, crashed", lambda _c, x, _t: ["recover", str(x / "raw" / EXP)], 1),
    ("recover, ROOT/raw", lambda c, _x, _t: ["recover", str(c / "raw")], 2),
    ("show, complete", lambda c, _x, _t: ["show", str(c)], 0),
    ("show, partial", lambda _c, x, _t: ["show", _partial_file(x)], 1),
    ("show, missing file", lambda _c, _x, t: ["show", str(t / "nope.json")], 2),
]


class TestExitCodes:
    """0 complete and written, 1 pending/invalid/failed/partial, 2 usage or I/O error."""

    @pytest.mark.parametrize(("args", "code"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
    def test_code(
        self,
        complete: Path,
        crashed: Path,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        args: Callable[[Path, Path, Path], list[str]],
        code: int,
    ) -> None:
        """The command exits with the code of the table in README.md."""
        argv = args(complete, crashed, tmp_path)
        capsys.readouterr()
        assert run(capsys, *argv)[0] == code

    def test_readme_table_lists_each_code(self) -> None:
        """README.md has an exit-code table with a row for 0, 1 and 2."""
        text = README.read_text()
        section = text.split("### Exit codes", 1)[1].split("\n#", 1)[0]
        codes = re.findall(r"^\| `?(\d+)`? \|", section, flags=re.MULTILINE)
        assert codes[:3] == ["0", "1", "2"]


class TestHints:
    """A wrong folder names the folder that was probably meant."""

    @pytest.mark.parametrize("command", ["replay", "status"])
    @pytest.mark.parametrize("where", ["raw", f"raw/{EXP}"])
    def test_root_commands(
        self, complete: Path, capsys: pytest.CaptureFixture[str], command: str, where: str
    ) -> None:
        """``replay``/``status`` on ``ROOT/raw`` or an experiment: exit 2, "did you mean ROOT?"."""
        code, _out, err = run(capsys, command, str(complete / where))
        assert code == 2
        assert f"did you mean {complete}?" in err

    @pytest.mark.parametrize("command", ["validate", "recover"])
    def test_experiment_commands(
        self, complete: Path, capsys: pytest.CaptureFixture[str], command: str
    ) -> None:
        """``validate``/``recover`` on ROOT: exit 2, naming an experiment folder to use."""
        code, _out, err = run(capsys, command, str(complete))
        assert code == 2
        assert f"did you mean {complete / 'raw' / EXP}?" in err
        assert not (complete / "aggregated" / "complete.partial.json").exists()

    def test_folder_without_raw(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """An empty folder is not a root: exit 2 and say what a root holds."""
        code, _out, err = run(capsys, "replay", str(tmp_path))
        assert code == 2
        assert "no raw/ folder inside" in err
        assert list(tmp_path.iterdir()) == []


class TestVersionAndHelp:
    """``--version``, and help that shows metavars and no value type on flags."""

    def test_version(self, capsys: pytest.CaptureFixture[str]) -> None:
        """``--version`` prints the version and exits 0."""
        code, out, _err = run(capsys, "--version")
        assert (code, out.strip()) == (0, f"energy-ledger {__version__}")

    @pytest.mark.parametrize(
        "command",
        [None, *sorted(c.name or "" for c in app.registered_commands if c.name)],
    )
    def test_help_is_clean(self, capsys: pytest.CaptureFixture[str], command: str | None) -> None:
        """No ``<bool>``, no ``{arg}`` and no ``-v <int>`` in any help text."""
        args = ["--help"] if command is None else [command, "--help"]
        code, out, _err = run(capsys, *args)
        assert code == 0
        assert "<bool>" not in out
        assert not re.search(r"\{[a-z_]+\}|\{[A-Z_]+\}", out)
        assert "<int>" not in out

    @pytest.mark.parametrize(
        ("command", "usage"),
        [
            ("replay", "energy-ledger replay [OPTIONS] ROOT"),
            ("validate", "energy-ledger validate [OPTIONS] EXPERIMENT_DIR"),
            ("show", "energy-ledger show [OPTIONS] PATH"),
        ],
    )
    def test_usage_names_arguments(
        self, capsys: pytest.CaptureFixture[str], command: str, usage: str
    ) -> None:
        """The usage line names the argument in capitals, without braces."""
        _code, out, _err = run(capsys, command, "--help")
        assert usage in out

    def test_verbose_is_a_count_flag(self, complete: Path) -> None:
        """``-vv`` works; ``-v 3`` is not a value (3 is taken as the command and refused)."""
        assert cli("-vv", "status", str(complete)) == 0
        assert cli("-v", "3") == 2


class TestJson:
    """``--json`` output of replay, recover and show parses and says what happened."""

    def test_replay(self, crashed: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """One object per experiment, the counts and the exit code."""
        simulate(crashed, processes=2, requests=6, seed=3, prefix="done")
        code, out, _err = run(capsys, "replay", "--json", str(crashed))
        data = json.loads(out)
        assert code == data["exit_code"] == 1
        states = {e["experiment_id"]: (e["state"], e["action"]) for e in data["experiments"]}
        assert states == {"done-0000": ("complete", "written"), EXP: ("pending", "skipped")}
        assert (data["written"], data["not_complete"], data["errors"]) == (1, 1, 0)

    @pytest.mark.parametrize(("fixture", "partial"), [("complete", False), ("crashed", True)])
    def test_recover(
        self,
        request: pytest.FixtureRequest,
        capsys: pytest.CaptureFixture[str],
        fixture: str,
        partial: bool,
    ) -> None:
        """The file written, whether it is partial, the reasons and the coverage."""
        root: Path = request.getfixturevalue(fixture)
        capsys.readouterr()
        code, out, _err = run(capsys, "recover", "--json", str(root / "raw" / EXP))
        data = json.loads(out)
        assert data["partial"] is partial
        assert code == data["exit_code"] == (1 if partial else 0)
        suffix = ".partial.json" if partial else ".json"
        assert data["path"] == str(root / "aggregated" / f"{EXP}{suffix}")
        assert data["coverage"]["processes_found"] == 2
        assert bool(data["reasons"]) is partial

    def test_show(self, complete: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """The key figures of each result, as numbers."""
        code, out, _err = run(capsys, "show", "--json", str(complete))
        data = json.loads(out)
        assert code == data["exit_code"] == 0
        (result,) = data["results"]
        emitted = json.loads((complete / "aggregated" / f"{EXP}.json").read_bytes())
        assert result["experiment_id"] == EXP
        assert result["partial"] is False
        assert result["total_tokens"] == emitted["total_tokens"]
        assert result["total_energy_j"] == emitted["total_energy_j"]
        assert data["problems"] == []


class TestMessages:
    """Messages that were missing or wrong."""

    def test_validate_reports_an_orphan_marker(
        self, complete: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A ``process_<i>.done`` without its log is reported (text and JSON)."""
        folder = complete / "raw" / EXP
        shutil.copyfile(folder / "process_1.done", folder / "process_7.done")
        _code, out, _err = run(capsys, "validate", str(folder))
        assert "problem: process_7.done has no log beside it" in out
        _code, out, _err = run(capsys, "validate", "--json", str(folder))
        assert "process_7.done has no log beside it" in json.loads(out)["problems"]

    def test_recover_says_the_result_is_complete(
        self, crashed: Path, complete: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """recover on a complete experiment says so and writes no PARTIAL file."""
        (complete / "aggregated" / f"{EXP}.json").unlink()
        code, out, _err = run(capsys, "recover", str(complete / "raw" / EXP))
        assert code == 0
        assert f"wrote {complete / 'aggregated' / EXP}.json (complete result" in out
        assert "PARTIAL" not in out
        assert not (complete / "aggregated" / f"{EXP}.partial.json").exists()

    def test_show_prints_each_experiment_once(
        self, complete: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A stale partial beside the full result is not shown a second time."""
        aggregated = complete / "aggregated"
        shutil.copyfile(aggregated / f"{EXP}.json", aggregated / f"{EXP}.partial.json")
        _code, out, _err = run(capsys, "show", str(complete))
        assert out.count(f"{EXP}  [") == 1
        assert f"[{aggregated / EXP}.json]" in out

    def test_foreign_csv_message_names_both_files(
        self, complete: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """replay over a CSV with another header warns, naming the CSV and where it went."""
        csv_path = complete / "aggregated" / "results.csv"
        csv_path.write_text("a,b\n")
        code, _out, err = run(capsys, "replay", "-q", str(complete))
        assert code == 0
        assert (
            f"{csv_path}: its header is not energy-ledger's; moved it to {csv_path}.foreign-1"
            in (" ".join(err.split()))
        )


class TestSimulateSize:
    """A huge ``--requests`` warns first; progress goes to a terminal only."""

    def test_warning_names_the_size(self) -> None:
        """Above a million requests per process the size is named; below, nothing."""
        assert size_warning(experiments=1, processes=4, requests=1_000_000, itl=True) is None
        warning = size_warning(experiments=1, processes=4, requests=10_000_000, itl=True)
        assert warning is not None
        assert "--requests 10,000,000 per process writes about 34.8 GB" in warning

    def test_cli_warns_before_writing(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The warning is printed before the run starts (the run itself is stubbed here)."""
        calls: list[dict[str, object]] = []

        def fake_simulate(root: Path, **kwargs: object) -> list[object]:
            calls.append(kwargs)
            return []

        monkeypatch.setattr("energy_ledger.simulate.simulate", fake_simulate)
        code, _out, err = run(capsys, "simulate", str(tmp_path / "big"), "--requests", "2000001")
        assert code == 0
        assert "warning: --requests 2,000,001 per process writes about" in err
        assert calls and calls[0]["keep_samples"] is False

    def test_progress_adds_up(self, tmp_path: Path) -> None:
        """``progress`` is told about every request written, in steps."""
        steps: list[int] = []
        simulate(tmp_path, processes=2, requests=12_000, itl=False, progress=steps.append)
        assert sum(steps) == 24_000
        assert max(steps) == 10_000

    def test_no_progress_without_a_terminal(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Output to a pipe gets the summary line and nothing on stderr."""
        code, out, err = run(capsys, "simulate", str(tmp_path / "s"), "--requests", "5")
        assert code == 0
        assert out.startswith("simulated 1 experiment(s)")
        assert err == ""
