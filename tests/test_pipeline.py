"""Tests for energy_ledger.pipeline on real files: replay, idempotence, bad input, recover.

Every case builds a results root in ``tmp_path`` with the simulator (which writes through the
real ``EventLogWriter``), breaks it the way a crash, a shared filesystem or a careless user
would, and checks both the reason given and that nothing (or only a partial) is emitted.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import jsonschema
import orjson
import pytest

from energy_ledger import pipeline
from energy_ledger.cli import cli
from energy_ledger.exceptions import LedgerError, UnsafePathError
from energy_ledger.pipeline import Outcome, recover_experiment, replay_root
from energy_ledger.simulate import simulate
from tests.helpers import RESULT_SCHEMA, compat_schema, result_outputs

EXP = "sim-0000"


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder`` with its bytes and mtime in nanoseconds."""
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def visible(folder: Path) -> list[str]:
    """The names in ``folder`` a user sees (the lock and the CSV's sources file are hidden)."""
    return sorted(n for n in os.listdir(folder) if not n.startswith("."))


def by_id(outcomes: list[Outcome]) -> dict[str, Outcome]:
    """Outcomes keyed by experiment id."""
    return {o.experiment_id: o for o in outcomes}


def assert_nothing_emitted(root: Path) -> None:
    """No result file and no CSV were written under ``root``."""
    aggregated = root / "aggregated"
    assert not aggregated.exists() or sorted(os.listdir(aggregated)) == []


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A results root holding one complete simulated 2-process experiment."""
    simulate(tmp_path / "root", processes=2, requests=12, seed=11)
    return tmp_path / "root"


def experiment(root: Path) -> Path:
    """The experiment folder of the ``root`` fixture."""
    return root / "raw" / EXP


class TestReplay:
    """A complete experiment is emitted once; a second replay writes nothing."""

    def test_first_replay_writes_json_and_csv(self, root: Path) -> None:
        """The first replay writes ``<id>.json`` and ``results.csv``."""
        outcomes = replay_root(root)
        assert [(o.experiment_id, o.state, o.action) for o in outcomes] == [
            (EXP, "complete", "written")
        ]
        assert visible(root / "aggregated") == result_outputs(EXP)

    @pytest.mark.parametrize("force", [False, True])
    def test_second_replay_writes_nothing(self, root: Path, force: bool) -> None:
        """A second replay (forced or not) leaves every byte and mtime as it was."""
        replay_root(root)
        before = snapshot(root / "aggregated")
        outcomes = replay_root(root, force=force)
        assert [(o.experiment_id, o.action) for o in outcomes] == [(EXP, "up-to-date")]
        assert snapshot(root / "aggregated") == before

    def test_same_inputs_same_bytes(self, tmp_path: Path) -> None:
        """Two roots simulated with the same seed give byte-identical JSON and CSV."""
        outputs = []
        for name in ("a", "b"):
            simulate(tmp_path / name, experiments=2, processes=3, requests=10, seed=5)
            replay_root(tmp_path / name)
            files = snapshot(tmp_path / name / "aggregated")
            outputs.append({k: v[0] for k, v in files.items() if not k.startswith(".")})
        assert sorted(outputs[0]) == result_outputs("sim-0000", "sim-0001")
        assert outputs[0] == outputs[1]

    def test_different_seed_different_bytes(self, tmp_path: Path) -> None:
        """The byte comparison above can fail: another seed gives another result."""
        for name, seed in (("a", 5), ("b", 6)):
            simulate(tmp_path / name, processes=2, requests=10, seed=seed)
            replay_root(tmp_path / name)
        a, b = (tmp_path / n / "aggregated" / f"{EXP}.json" for n in ("a", "b"))
        assert a.read_bytes() != b.read_bytes()

    def test_missing_root(self, tmp_path: Path) -> None:
        """A root that does not exist is a ``LedgerError`` naming it."""
        with pytest.raises(LedgerError, match="no such results folder"):
            replay_root(tmp_path / "nope")

    @pytest.mark.parametrize("where", ["raw", "raw/sim-0000"])
    def test_wrong_folder_names_the_root(self, root: Path, where: str) -> None:
        """``ROOT/raw`` or an experiment folder given as the root is refused, naming ROOT."""
        with pytest.raises(LedgerError, match=f"did you mean {root}\\?"):
            replay_root(root / where)
        assert not (root / "aggregated").exists()


class TestTornLines:
    """A last line without its newline is not an event yet."""

    def test_torn_tail_after_a_complete_log_is_ignored(self, tmp_path: Path) -> None:
        """Half a line appended to a finished log changes nothing in the result.

        docs/format.md: a marker is valid when the log's *complete* bytes (up to the last
        newline) match it; a torn line is not written yet.
        """
        for name in ("clean", "torn"):
            simulate(tmp_path / name, processes=2, requests=8, seed=2)
        log = tmp_path / "torn" / "raw" / EXP / "process_1.events.jsonl"
        with open(log, "ab") as fh:
            fh.write(b'{"v":1,"seq":99,"t":1.0,"type":"req')
        for name in ("clean", "torn"):
            replay_root(tmp_path / name)
        clean, torn = (tmp_path / n / "aggregated" / f"{EXP}.json" for n in ("clean", "torn"))
        assert torn.read_bytes() == clean.read_bytes()

    def test_completed_torn_tail_invalidates(self, root: Path) -> None:
        """Once the torn line gets its newline, the log holds more than its marker covers."""
        log = experiment(root) / "process_1.events.jsonl"
        last = orjson.loads(log.read_bytes().splitlines()[-1])
        with open(log, "ab") as fh:
            event = {"v": 1, "seq": last["seq"] + 1, "t": last["t"] + 1.0, "type": "warning",
                     "message": "late"}  # fmt: skip
            fh.write(orjson.dumps(event) + b"\n")
        (outcome,) = replay_root(root)
        assert outcome.state == "invalid"
        assert "more than the" in outcome.detail
        assert_nothing_emitted(root)

    def test_torn_line_of_a_crashed_process_is_ignored_by_recover(self, tmp_path: Path) -> None:
        """``recover`` skips nothing and counts every request the crashed process wrote."""
        (truth,) = simulate(tmp_path, processes=2, requests=10, crash=1, torn=True, seed=4)
        log = tmp_path / "raw" / EXP / "process_1.events.jsonl"
        assert not log.read_bytes().endswith(b"\n")
        recovery = recover_experiment(tmp_path / "raw" / EXP)
        assert recovery.coverage["skipped_lines"] == []
        assert recovery.coverage["requests"] == len(truth.latencies_ms)


def rewrite_line(path: Path, line_no: int, new: bytes) -> None:
    """Replace 1-based line ``line_no`` of ``path`` with ``new``."""
    lines = path.read_bytes().split(b"\n")
    lines[line_no - 1] = new
    path.write_bytes(b"\n".join(lines))


class TestCorruptLog:
    """A corrupt line in the middle is an error naming the process and the line."""

    def test_corrupt_middle_line(self, root: Path) -> None:
        """Replay reports the log and line 3, and emits nothing."""
        rewrite_line(experiment(root) / "process_1.events.jsonl", 3, b"{not json")
        (outcome,) = replay_root(root)
        assert outcome.state == "invalid"
        assert outcome.action == "skipped"
        assert "process 1 log cannot be replayed" in outcome.detail
        assert "process_1.events.jsonl:3:" in outcome.detail
        assert_nothing_emitted(root)

    def test_recover_skips_and_lists_the_corrupt_line(self, root: Path) -> None:
        """``recover`` skips the line and names the file and line in the partial result."""
        rewrite_line(experiment(root) / "process_1.events.jsonl", 3, b"{not json")
        recovery = recover_experiment(experiment(root))
        skipped = recovery.coverage["skipped_lines"]
        assert "process_1.events.jsonl:3: line is not valid JSON" in skipped[0]
        assert recovery.result.aggregation is not None
        assert recovery.result.aggregation.model_extra is not None
        assert recovery.result.aggregation.model_extra["partial"] is True


class TestMarkers:
    """Missing, invalid and early markers keep an experiment from being emitted."""

    def test_missing_marker_is_pending(self, root: Path) -> None:
        """Without ``process_1.done`` the experiment is pending and not emitted."""
        (experiment(root) / "process_1.done").unlink()
        (outcome,) = replay_root(root)
        assert outcome.state == "pending"
        assert "process 1 has no completion marker (process_1.done)" in outcome.detail
        assert_nothing_emitted(root)

    @pytest.mark.parametrize(
        ("mutate", "needle"),
        [
            (lambda m: {**m, "log_sha256": "0" * 64}, "does not match its marker's SHA-256"),
            (lambda m: {**m, "log_bytes": m["log_bytes"] - 1}, "more than the"),
            (lambda m: {**m, "final_seq": m["final_seq"] - 1}, "the log ends at"),
            (lambda m: {**m, "run_id": "old-run"}, "marker is stale"),
            (lambda m: {**m, "process_index": 0}, "marker names process 0"),
            (lambda m: "garbage", "marker is unusable"),
        ],
        ids=["sha256", "log_bytes", "final_seq", "run_id", "index", "garbage"],
    )
    def test_invalid_marker(
        self, root: Path, mutate: Callable[[dict[str, object]], object], needle: str
    ) -> None:
        """A marker that does not match its log makes the experiment invalid."""
        path = experiment(root) / "process_1.done"
        new = mutate(orjson.loads(path.read_bytes()))
        path.write_bytes(new.encode() if isinstance(new, str) else orjson.dumps(new))
        (outcome,) = replay_root(root)
        assert outcome.state == "invalid"
        assert needle in outcome.detail
        assert_nothing_emitted(root)

    def test_marker_before_its_log_bytes_is_not_yet(self, root: Path) -> None:
        """A marker promising bytes that have not arrived is pending ("not yet"), then done."""
        log = experiment(root) / "process_1.events.jsonl"
        full = log.read_bytes()
        log.write_bytes(full[: len(full) // 2])
        (outcome,) = replay_root(root)
        assert outcome.state == "pending"
        assert "not yet" in outcome.detail
        assert_nothing_emitted(root)
        log.write_bytes(full)
        (outcome,) = replay_root(root)
        assert (outcome.state, outcome.action) == ("complete", "written")


class TestIdentity:
    """Logs that contradict each other are reported and never aggregated."""

    def test_duplicate_index(self, root: Path) -> None:
        """A ``process_1`` log whose events say it is process 0 is a duplicate index."""
        folder = experiment(root)
        shutil.copyfile(folder / "process_0.events.jsonl", folder / "process_1.events.jsonl")
        (outcome,) = replay_root(root)
        assert outcome.state == "invalid"
        assert "process_1 log says it is process 0" in outcome.detail
        assert "duplicate process indices: [0]" in outcome.detail
        assert_nothing_emitted(root)

    def test_stale_run_id(self, root: Path, tmp_path: Path) -> None:
        """One process's log (and marker) from another run of the same experiment is refused."""
        simulate(tmp_path / "other", processes=2, requests=12, seed=99)
        for name in ("process_1.events.jsonl", "process_1.done"):
            shutil.copyfile(tmp_path / "other" / "raw" / EXP / name, experiment(root) / name)
        (outcome,) = replay_root(root)
        assert outcome.state == "invalid"
        assert "processes disagree on run_id: run-11-0, run-99-0 (stale logs?)" in outcome.detail
        assert_nothing_emitted(root)


class TestUnsafePaths:
    """Unsafe folder names and symbolic links out of the root are refused, never read."""

    UNSAFE = ("bad name", "-x", "a" * 200, "x..y")

    def test_unsafe_names_rejected_others_emitted(
        self, root: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Each unsafe name is rejected unread; the valid experiment is still emitted."""
        for name in (*self.UNSAFE, ".hidden"):
            shutil.copytree(experiment(root), root / "raw" / name)
        scanned: list[str] = []
        real_scan = pipeline.scan_experiment

        def spy(directory: Path, **kwargs: object) -> object:
            scanned.append(Path(directory).name)
            return real_scan(directory, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(pipeline, "scan_experiment", spy)
        outcomes = by_id(replay_root(root))
        assert scanned == [EXP]
        assert (outcomes[EXP].state, outcomes[EXP].action) == ("complete", "written")
        for name in self.UNSAFE:
            assert outcomes[name].state == "rejected"
            assert "unsafe experiment folder name" in outcomes[name].detail
        assert ".hidden" not in outcomes  # hidden folders are skipped silently
        assert visible(root / "aggregated") == result_outputs(EXP)

    def test_symlinked_experiment_outside_root(self, root: Path, tmp_path: Path) -> None:
        """A link from ``raw/`` to a folder outside the root is rejected; recover refuses it."""
        simulate(tmp_path / "outside", processes=2, requests=5, seed=1, prefix="ext")
        link = root / "raw" / "linked"
        link.symlink_to(tmp_path / "outside" / "raw" / "ext-0000", target_is_directory=True)
        outcomes = by_id(replay_root(root))
        assert outcomes["linked"].state == "rejected"
        assert "symbolic link leads outside the results root" in outcomes["linked"].detail
        assert not (root / "aggregated" / "linked.json").exists()
        with pytest.raises(UnsafePathError, match="outside the results root"):
            recover_experiment(link)

    def test_symlinked_log_outside_root(
        self, root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A log that links out of the root is ignored with a warning: the process is missing."""
        outside = tmp_path / "elsewhere.jsonl"
        log = experiment(root) / "process_1.events.jsonl"
        shutil.move(log, outside)
        log.symlink_to(outside)
        with caplog.at_level(logging.WARNING, logger="energy_ledger"):
            (outcome,) = replay_root(root)
        assert any("leads outside the results root" in r.getMessage() for r in caplog.records)
        assert outcome.state == "pending"
        assert "expected 2 processes, found 1 (missing [1])" in outcome.detail
        assert_nothing_emitted(root)

    def test_symlinked_log_inside_root_is_followed(self, root: Path) -> None:
        """A link that stays inside the root is read like a file (the check above can fail)."""
        log = experiment(root) / "process_1.events.jsonl"
        inside = root / "store.jsonl"
        shutil.move(log, inside)
        log.symlink_to(inside)
        (outcome,) = replay_root(root)
        assert (outcome.state, outcome.action) == ("complete", "written")


class TestRecover:
    """``recover`` writes an explicitly partial result and says how much it covers."""

    def test_crashed_run(self, tmp_path: Path, compat_dir: Path) -> None:
        """A crash of process 2 gives ``<id>.partial.json`` with completeness and coverage."""
        (truth,) = simulate(tmp_path, processes=3, requests=10, crash=1, torn=True, seed=8)
        assert all(o.action == "skipped" for o in replay_root(tmp_path))
        recovery = recover_experiment(tmp_path / "raw" / EXP)
        assert recovery.path == tmp_path / "aggregated" / f"{EXP}.partial.json"
        data = json.loads(recovery.path.read_bytes())
        aggregation = data["aggregation"]
        assert aggregation["partial"] is True
        assert aggregation["completeness"]["missing_markers"] == [2]
        assert aggregation["completeness"]["is_complete"] is False
        coverage = aggregation["coverage"]
        assert coverage["processes_found"] == 3
        assert coverage["processes_expected"] == 3
        assert coverage["processes_finished"] == 2
        assert coverage["requests"] == len(truth.latencies_ms)
        assert coverage["measured_seconds"] > 0
        assert not (tmp_path / "aggregated" / f"{EXP}.json").exists()
        jsonschema.Draft202012Validator(compat_schema(compat_dir, RESULT_SCHEMA)).validate(data)

    def test_failed_process(self, tmp_path: Path) -> None:
        """A process that wrote ``process_failed`` is reported as failed."""
        simulate(tmp_path, processes=3, requests=10, fail=1, seed=8)
        recovery = recover_experiment(tmp_path / "raw" / EXP)
        assert recovery.report.state == "failed"
        assert recovery.report.failed_indices == [2]
        assert recovery.coverage["processes_failed"] == [2]
        assert any("process 2 failed: RuntimeError" in r for r in recovery.report.reasons)

    def test_empty_folder(self, tmp_path: Path) -> None:
        """A folder with no log at all is a ``LedgerError``, not an empty result."""
        (tmp_path / "raw" / "empty").mkdir(parents=True)
        with pytest.raises(LedgerError, match="no process log could be replayed"):
            recover_experiment(tmp_path / "raw" / "empty")
        assert not (tmp_path / "aggregated").exists()


class TestUnwritableOutput:
    """A write that fails leaves a clear message, no temp file and the old result intact."""

    def test_aggregated_is_a_file(self, root: Path) -> None:
        """When ``aggregated`` is a regular file, replay says so and changes nothing."""
        (root / "aggregated").write_bytes(b"in the way\n")
        with pytest.raises(LedgerError, match="aggregated: it is a file, not a folder"):
            replay_root(root)
        assert (root / "aggregated").read_bytes() == b"in the way\n"

    @pytest.mark.usefixtures("restore_logging")
    def test_replay_exit_code_when_writing_fails(
        self, root: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """``energy-ledger replay`` exits 2 with the reason when it cannot write a result."""
        (root / "aggregated").write_bytes(b"in the way\n")
        assert cli("replay", "--quiet", str(root)) == 2
        captured = capsys.readouterr()
        assert "it is a file, not a folder" in captured.err
        assert "Traceback" not in captured.out + captured.err

    def test_disk_full_keeps_the_old_result(
        self, root: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """ENOSPC at the rename leaves the old file, removes the temp file, names the cause."""
        aggregated = root / "aggregated"
        aggregated.mkdir()
        (aggregated / f"{EXP}.json").write_bytes(b"old\n")

        def full(src: object, dst: object) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(os, "replace", full)
        (outcome,) = replay_root(root, force=True)
        assert outcome.action == "error"
        assert "No space left on device" in outcome.detail
        assert sorted(os.listdir(aggregated)) == [".lock", f"{EXP}.json"]  # no temp file
        assert (aggregated / f"{EXP}.json").read_bytes() == b"old\n"

    def test_failed_csv_write_is_repaired_next_time(
        self, root: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """After the CSV write fails once, the next replay writes the missing row."""
        real_replace = os.replace

        def csv_full(src: str, dst: str) -> None:
            if str(dst).endswith("results.csv"):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real_replace(src, dst)

        monkeypatch.setattr(os, "replace", csv_full)
        (first,) = replay_root(root)
        assert first.action == "error"
        assert "cannot rebuild" in first.detail
        monkeypatch.setattr(os, "replace", real_replace)
        (second,) = replay_root(root)
        assert second.action == "up-to-date"
        table = (root / "aggregated" / "results.csv").read_text().splitlines()
        assert [line.split(",")[0] for line in table] == ["experiment_id", EXP]
