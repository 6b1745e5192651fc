"""Tests for energy_ledger.cli: every command through ``cli(*args)``, and bad input.

Bad input must give a message and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from energy_ledger.cli import app, cli
from energy_ledger.simulate import simulate

EXP = "sim-0000"
README = Path(__file__).resolve().parents[1] / "README.md"
COMMANDS = {"replay", "recover", "validate", "status", "simulate", "schema", "show"}


pytestmark = pytest.mark.usefixtures("restore_logging")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A results root with one complete simulated 2-process experiment."""
    simulate(tmp_path, processes=2, requests=6, seed=3)
    return tmp_path


@pytest.fixture
def crashed(tmp_path: Path) -> Path:
    """A results root whose experiment lost process 1 (crash, torn line)."""
    simulate(tmp_path, processes=2, requests=6, seed=3, crash=1, torn=True)
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the CLI; return its exit code, stdout and stderr (checked for tracebacks)."""
    code = cli(*args)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return code, captured.out, captured.err


class TestSimulate:
    """``simulate`` writes ledgers through the writer."""

    def test_writes_logs_and_markers(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Two processes give two logs and two markers, and a summary line."""
        code, out, _ = run(capsys, "simulate", str(tmp_path), "--processes", "2", "--requests", "3")
        assert code == 0
        assert "simulated 1 experiment(s) x 2 process(es) x 3 request(s)" in out
        names = sorted(p.name for p in (tmp_path / "raw" / EXP).iterdir())
        assert names == [
            "process_0.done",
            "process_0.events.jsonl",
            "process_1.done",
            "process_1.events.jsonl",
        ]

    def test_truth_file(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """``--truth`` writes the ground truth the library returns for the same seed."""
        truth_path = tmp_path / "truth.json"
        args = ("--processes", "2", "--requests", "4", "--seed", "9")
        code, _, _ = run(capsys, "simulate", str(tmp_path / "a"), *args, "--truth", str(truth_path))
        assert code == 0
        (expected,) = simulate(tmp_path / "b", processes=2, requests=4, seed=9)
        (written,) = json.loads(truth_path.read_bytes())
        assert written["total_tokens"] == expected.total_tokens
        assert written["energy_j"] == expected.energy_j


class TestReplay:
    """``replay`` prints a table and a counts line; a second run writes nothing."""

    def test_first_and_second_run(self, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """The first run writes one result, the second finds it up to date."""
        code, out, _ = run(capsys, "replay", str(root))
        assert code == 0
        assert EXP in out
        assert "written" in out
        assert "1 written, 0 up to date, 0 not complete" in out
        code, out, _ = run(capsys, "replay", str(root))
        assert code == 0
        assert "0 written, 1 up to date, 0 not complete" in out

    def test_incomplete_experiment_in_the_table(
        self, crashed: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An incomplete experiment is listed with the reason, and replay exits 1."""
        code, out, _ = run(capsys, "replay", str(crashed))
        assert code == 1
        assert "pending" in out
        assert "process_1.done" in out
        assert "0 written, 0 up to date, 1 not complete" in out


class TestValidate:
    """``validate`` prints the report; exit 0 when complete, 1 when not."""

    def test_complete(self, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A complete experiment exits 0 and says COMPLETE."""
        code, out, _ = run(capsys, "validate", str(root / "raw" / EXP))
        assert code == 0
        assert f"{EXP}: COMPLETE" in out

    def test_incomplete_prints_the_reason(
        self, crashed: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An incomplete experiment says PENDING and why."""
        _code, out, _ = run(capsys, "validate", str(crashed / "raw" / EXP))
        assert f"{EXP}: PENDING" in out
        assert "process 1 has no completion marker (process_1.done)" in out

    def test_incomplete_exits_1(self, crashed: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """An incomplete experiment exits 1."""
        code, _, _ = run(capsys, "validate", str(crashed / "raw" / EXP))
        assert code == 1

    @pytest.mark.parametrize(("fixture", "complete"), [("root", True), ("crashed", False)])
    def test_json(
        self,
        request: pytest.FixtureRequest,
        capsys: pytest.CaptureFixture[str],
        fixture: str,
        complete: bool,
    ) -> None:
        """``--json`` prints the report as parseable JSON."""
        base: Path = request.getfixturevalue(fixture)
        code, out, _ = run(capsys, "validate", "--json", str(base / "raw" / EXP))
        assert code == (0 if complete else 1)
        report = json.loads(out)
        assert report["exit_code"] == code
        assert report["experiment_id"] == EXP
        assert report["is_complete"] is complete
        assert report["expected_processes"] == 2


def _short_window_root(tmp_path: Path) -> Path:
    """A complete one-process experiment whose window lasts 0.5 s: energy unreliable."""
    from energy_ledger.store.writer import EventLogWriter

    ticks = iter([0.0, 1.0, 1.5, 1.5])
    writer = EventLogWriter.open(tmp_path, "short", 0, clock=lambda: 1_700_000_000 + next(ticks))
    writer.append(
        "process_started", experiment_id="short", run_id="r", process_index=0, world_size=1,
        gpu_id=0, gpu_uuid="GPU-a",
    )  # fmt: skip
    writer.append("window_started", energy_mj=0)
    writer.append("window_ended", energy_mj=100_000)
    writer.close()
    return tmp_path


class TestValidityReasons:
    """Weak measurements are reasons in ``validate`` and ``status``, and block nothing."""

    def test_validate_prints_the_warning(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A complete experiment with a 0.5 s window exits 0 and warns that energy is weak."""
        root = _short_window_root(tmp_path)
        code, out, _ = run(capsys, "validate", str(root / "raw" / "short"))
        assert code == 0
        assert "warning: energy_unreliable" in out
        code, out, _ = run(capsys, "validate", "--json", str(root / "raw" / "short"))
        assert any(
            w.startswith("energy_unreliable") for w in json.loads(out)["measurement_warnings"]
        )

    def test_status_shows_it_for_the_emitted_result(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """After ``replay`` the experiment is emitted and ``status --json`` carries the warning."""
        root = _short_window_root(tmp_path)
        assert run(capsys, "replay", str(root))[0] == 0
        code, out, _ = run(capsys, "status", "--json", str(root))
        assert code == 0
        (row,) = json.loads(out)["experiments"]
        assert row["result"] == "emitted"
        assert any(w.startswith("energy_unreliable") for w in row["warnings"])


class TestRecover:
    """``recover`` writes a partial result and says what it covered."""

    def test_crashed_run(self, crashed: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """The output names the partial file and the coverage; exit 1 (only partial)."""
        code, out, _ = run(capsys, "recover", str(crashed / "raw" / EXP))
        assert code == 1
        assert f"{EXP}.partial.json (PARTIAL result)" in out
        assert "covered: 2/2 processes (1 finished)" in out
        assert "not complete: process 1 has no completion marker" in out
        assert (crashed / "aggregated" / f"{EXP}.partial.json").is_file()


class TestStatusShowSchema:
    """``status``, ``show`` and ``schema`` print what is there."""

    def test_status_table(self, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """The table lists the experiment, its state and whether it is emitted (exit 1: not)."""
        code, out, _ = run(capsys, "status", str(root))
        assert code == 1
        assert EXP in out
        assert "complete" in out
        assert "not emitted" in out

    def test_status_json(self, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """``--json`` lists experiments with state and result."""
        run(capsys, "replay", str(root))
        code, out, _ = run(capsys, "status", "--json", str(root))
        assert code == 0
        data = json.loads(out)
        (row,) = data["experiments"]
        warnings = row.pop("warnings")
        assert row == {"experiment_id": EXP, "state": "complete", "result": "emitted", "detail": ""}
        emitted = json.loads((root / "aggregated" / f"{EXP}.json").read_bytes())
        assert set(warnings) <= set(emitted["measurement_warnings"])

    @pytest.mark.parametrize("target", ["root", "file"])
    def test_show(self, root: Path, capsys: pytest.CaptureFixture[str], target: str) -> None:
        """``show`` prints the key figures of a result file or of every result under a root."""
        run(capsys, "replay", str(root))
        result = root / "aggregated" / f"{EXP}.json"
        code, out, _ = run(capsys, "show", str(root if target == "root" else result))
        assert code == 0
        assert EXP in out
        tokens = json.loads(result.read_bytes())["total_tokens"]
        assert f"{tokens:,}" in out

    def test_show_partial(self, crashed: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A partial result is labelled PARTIAL."""
        run(capsys, "recover", str(crashed / "raw" / EXP))
        code, out, _ = run(capsys, "show", str(crashed / "aggregated" / f"{EXP}.partial.json"))
        assert code == 1
        assert "(PARTIAL)" in out

    def test_schema(self, capsys: pytest.CaptureFixture[str]) -> None:
        """``schema`` prints a JSON Schema with the result's properties."""
        code, out, _ = run(capsys, "schema")
        assert code == 0
        schema = json.loads(out)
        assert "properties" in schema
        assert {"total_energy_j", "process_results", "aggregation"} <= set(schema["properties"])


class TestBadInput:
    """Bad input gives a message and a non-zero exit, never a traceback."""

    @pytest.mark.parametrize(
        ("args", "needle"),
        [
            (["replay", "{tmp}/nope"], "no such results folder"),
            (["status", "{tmp}/nope"], "no such results folder"),
            (["watch", "{tmp}/nope"], "no such results folder"),
            (["validate", "--expected", "0", "{tmp}/raw/sim-0000"], "--expected"),
            (["validate", "{tmp}/raw/nope"], "no such experiment folder"),
            (["recover", "{tmp}/raw/nope"], "no such experiment folder"),
            (["show", "{tmp}/nope.json"], "nope.json: cannot read: No such file"),
            (["validate", "{tmp}/raw/bad name"], "unsafe experiment id"),
            (["recover", "{tmp}/raw/.hidden"], "unsafe experiment id"),
            (["validate", "{tmp}/raw/a_file"], "not a folder"),
            (["show", "{tmp}/raw/a_file"], "a_file: not an ExperimentResult"),
            (["replay"], "Missing argument"),
            (["validate"], "Missing argument"),
            (["frobnicate"], "No such command"),
            (["validate", "--expected", "x", "{tmp}/raw/sim-0000"], "--expected"),
            (["simulate", "{tmp}/new", "--processes", "2", "--crash", "3"], "cannot exceed"),
            (["simulate", "{tmp}"], "already exists"),
            (["--log-format", "xml", "status", "{tmp}"], "--log-format must be text or json"),
        ],
    )
    def test_message_and_exit_code(
        self, root: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
    ) -> None:
        """The command fails cleanly (exit 2) with a message that says what is wrong."""
        (root / "raw" / "a_file").write_text("not a folder")
        code, out, err = run(capsys, *(a.replace("{tmp}", str(root)) for a in args))
        assert code == 2
        assert needle in out + err

    def test_no_arguments_shows_help(self, capsys: pytest.CaptureFixture[str]) -> None:
        """No arguments print the help with every command."""
        code, out, err = run(capsys)
        assert code != 0
        for name in COMMANDS:
            assert name in out + err


class TestConsole:
    """The real console entry point behaves like ``cli``."""

    @pytest.mark.parametrize(
        ("fixture", "code", "state"), [("root", 0, "COMPLETE"), ("crashed", 1, "PENDING")]
    )
    def test_python_m_validate(
        self, request: pytest.FixtureRequest, fixture: str, code: int, state: str
    ) -> None:
        """``python -m energy_ledger validate`` exits 0 when complete and 1 when not."""
        base: Path = request.getfixturevalue(fixture)
        proc = subprocess.run(
            [sys.executable, "-m", "energy_ledger", "validate", str(base / "raw" / EXP)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == code, proc.stderr
        assert f"{EXP}: {state}" in proc.stdout
        assert "Traceback" not in proc.stdout + proc.stderr

    def test_python_m_bad_input(self, tmp_path: Path) -> None:
        """A nonexistent folder exits 2 with a one-line message on stderr."""
        proc = subprocess.run(
            [sys.executable, "-m", "energy_ledger", "replay", str(tmp_path / "nope")],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 2
        assert proc.stderr.startswith("error: ")
        assert "Traceback" not in proc.stdout + proc.stderr


class TestDocumented:
    """Every command is documented in the README."""

    def test_every_command_in_readme(self) -> None:
        """Each registered command appears as ``energy-ledger <name>`` in README.md."""
        names = {
            c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands
        }
        assert names >= COMMANDS
        text = README.read_text()
        missing = sorted(n for n in names if f"energy-ledger {n}" not in text)
        assert missing == []
