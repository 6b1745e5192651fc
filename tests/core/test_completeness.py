"""Tests for energy_ledger.core.completeness: why an experiment is, or is not yet, complete."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from energy_ledger.core.completeness import CompletenessReport, ProcessEvidence, check_completeness
from energy_ledger.core.marker import parse_marker
from energy_ledger.core.process import summarize_process
from energy_ledger.core.replay import replay_bytes
from energy_ledger.core.state import ProcessState
from energy_ledger.store.writer import EventLogWriter
from tests.helpers import ticking_clock

EXP = "exp-1"
T0 = 1700000000.0

Make = Callable[..., ProcessEvidence]


def _evidence(data: bytes, index: int, marker_bytes: bytes | None) -> ProcessEvidence:
    """What a reader would gather for one log: its replay and its marker."""
    cursor = replay_bytes(data, strict=False)
    return ProcessEvidence(
        index=index,
        summary=summarize_process(cursor.state, index),
        complete_bytes=cursor.offset,
        torn_bytes=cursor.torn_bytes,
        sha256=cursor.sha256,
        last_seq=cursor.state.last_seq,
        marker=parse_marker(marker_bytes) if marker_bytes is not None else None,
    )


@pytest.fixture
def make(tmp_path: Path) -> Make:
    """Write a real log with ``EventLogWriter`` and return its evidence."""
    counter = iter(range(1000))

    def _make(
        index: int,
        *,
        world_size: int = 2,
        run_id: str = "run-a",
        claims: int | None = None,
        experiment_id: str = EXP,
        outcome: str = "close",
        edit: Callable[[bytes], bytes] | None = None,
    ) -> ProcessEvidence:
        root = tmp_path / f"root{next(counter)}"
        writer = EventLogWriter.open(root, EXP, index, clock=ticking_clock(T0))
        writer.append(
            "process_started",
            experiment_id=experiment_id,
            run_id=run_id,
            process_index=index if claims is None else claims,
            world_size=world_size,
            gpu_id=index,
        )
        writer.append("window_started", energy_mj=0)
        writer.append("request", latency_ms=10.0, input_tokens=5, output_tokens=7)
        writer.append("window_ended", energy_mj=1000)
        if outcome == "close":
            writer.close()
        elif outcome == "fail":
            writer.fail("RuntimeError: boom")
        else:
            writer.abandon()
        data = writer.path.read_bytes()
        if edit is not None:
            data = edit(data)
        marker = writer.marker_path.read_bytes() if writer.marker_path.exists() else None
        return _evidence(data, index, marker)

    return _make


def _check(*evidence: ProcessEvidence, expected: int | None = None) -> CompletenessReport:
    return check_completeness(EXP, list(evidence), expected)


def _has(report: CompletenessReport, text: str) -> bool:
    return any(text in reason for reason in report.reasons)


class TestComplete:
    """A full set of finished processes with valid markers is complete."""

    def test_complete_experiment(self, make: Make) -> None:
        """Two finished processes with valid markers give a complete report and no reasons."""
        report = _check(make(0), make(1))
        assert report.is_complete
        assert report.state == "complete"
        assert report.reasons == []
        assert report.error_message is None
        assert report.expected_processes == 2
        assert report.found_indices == [0, 1]
        assert report.run_ids == ["run-a"]

    def test_order_of_evidence_does_not_matter(self, make: Make) -> None:
        """The report is the same whatever order the processes are given in."""
        a, b = make(0), make(1)
        assert _check(a, b) == _check(b, a)

    def test_explicit_expected_count(self, make: Make) -> None:
        """An explicit ``expected_processes`` equal to the world size is complete."""
        assert _check(make(0, world_size=1), expected=1).is_complete

    def test_to_dict(self, make: Make) -> None:
        """``to_dict`` gives a JSON-ready form with the state and the reasons."""
        report = _check(make(0))
        d = report.to_dict()
        assert orjson.loads(orjson.dumps(d)) == d
        assert d["state"] == "pending"
        assert d["is_complete"] is False
        assert d["missing_indices"] == [1]
        assert d["reasons"] == list(report.reasons)


class TestCount:
    """The number of processes and their indices must be exactly 0..N-1."""

    def test_count_mismatch(self, make: Make) -> None:
        """Fewer processes than expected is pending, with the counts in words."""
        report = _check(make(0, world_size=3), make(1, world_size=3))
        assert not report.is_complete
        assert report.state == "pending"
        assert report.missing_indices == [2]
        assert _has(report, "expected 3 processes, found 2 (missing [2])")

    def test_missing_index(self, make: Make) -> None:
        """A gap in the indices is reported as missing."""
        report = _check(make(1))
        assert report.missing_indices == [0]
        assert report.state == "pending"
        assert _has(report, "missing [0]")

    def test_expected_count_overrides_world_size(self, make: Make) -> None:
        """An explicit expected count larger than the world size is not met."""
        report = _check(make(0), make(1), expected=4)
        assert report.missing_indices == [2, 3]
        assert not report.is_complete

    def test_duplicate_index(self, make: Make) -> None:
        """A ``process_1`` log that claims index 0 duplicates index 0 and is invalid."""
        report = _check(make(0), make(1, claims=0))
        assert report.duplicate_indices == [0]
        assert report.state == "invalid"
        assert _has(report, "process_1 log says it is process 0")
        assert _has(report, "duplicate process indices: [0]")

    def test_index_at_or_above_world_size(self, make: Make) -> None:
        """A file index ``>= N`` is out of range and invalid.

        A log cannot itself claim an index ``>= N`` (the format refuses it, see test_events),
        so the third file here holds a valid log that says it is process 1.
        """
        report = _check(make(0), make(1), make(2, claims=1))
        assert report.out_of_range_indices == [2]
        assert report.state == "invalid"
        assert _has(report, "process indices [2] are >= world size 2")

    def test_no_processes(self) -> None:
        """No logs at all is pending, and says so."""
        report = _check()
        assert report.state == "pending"
        assert _has(report, "no process logs found")

    def test_no_process_started_yet(self) -> None:
        """A log without ``process_started`` leaves the world size unknown: pending."""
        summary = summarize_process(ProcessState(), 0)
        report = _check(ProcessEvidence(index=0, summary=summary))
        assert report.state == "pending"
        assert _has(report, "no process_started event yet")
        assert _has(report, "world size unknown")


class TestMarkers:
    """Every process needs a marker that matches its log."""

    def test_missing_marker(self, make: Make) -> None:
        """A process without a marker is pending."""
        report = _check(make(0), make(1, outcome="abandon"))
        assert report.missing_markers == [1]
        assert report.state == "pending"
        assert _has(report, "process 1 has no completion marker (process_1.done)")

    def test_marker_pending(self, make: Make) -> None:
        """A marker that promises more bytes than have arrived is pending, not invalid."""
        report = _check(make(0), make(1, edit=lambda data: data[:-30]))
        assert report.pending_markers == [1]
        assert report.invalid_markers == []
        assert report.state == "pending"
        assert _has(report, "(not yet)")

    def test_marker_pending_with_everything_but_the_newline(self, make: Make) -> None:
        """A log missing only its final newline is still pending."""
        report = _check(make(0), make(1, edit=lambda data: data[:-1]))
        assert report.pending_markers == [1]
        assert report.state == "pending"

    def test_marker_for_fewer_bytes_than_the_log(self, make: Make) -> None:
        """Events after the marker's byte count make the marker invalid."""
        extra = orjson.dumps({"v": 1, "seq": 5, "t": T0 + 9, "type": "warning", "message": "late"})
        report = _check(make(0), make(1, edit=lambda data: data + extra + b"\n"))
        assert report.invalid_markers == [1]
        assert report.state == "invalid"
        assert _has(report, "more than the")

    def test_torn_bytes_after_the_marker_are_not_counted(self, make: Make) -> None:
        """A torn line after the marked bytes is not a complete line, so the marker holds."""
        report = _check(make(0), make(1, edit=lambda data: data + b'{"v":1,"se'))
        assert report.is_complete

    def test_wrong_sha256(self, make: Make) -> None:
        """A log whose bytes differ from what the marker hashed is invalid."""

        def edit(data: bytes) -> bytes:
            assert b'"latency_ms":10.0' in data
            return data.replace(b'"latency_ms":10.0', b'"latency_ms":19.0')

        report = _check(make(0), make(1, edit=edit))
        assert report.invalid_markers == [1]
        assert report.state == "invalid"
        assert _has(report, "does not match its marker's SHA-256")

    def test_wrong_final_seq(self, make: Make) -> None:
        """A marker whose final seq is not the log's last is invalid."""
        ev = make(1)
        assert ev.marker is not None
        bad = dataclasses.replace(ev, marker=dataclasses.replace(ev.marker, final_seq=3))
        report = _check(make(0), bad)
        assert report.invalid_markers == [1]
        assert _has(report, "the last seq is 3, the log ends at 4")

    def test_stale_run_id_in_marker(self, make: Make) -> None:
        """A marker left over from another run is stale and invalid."""
        ev = make(1)
        assert ev.marker is not None
        stale = dataclasses.replace(ev, marker=dataclasses.replace(ev.marker, run_id="run-old"))
        report = _check(make(0), stale)
        assert report.invalid_markers == [1]
        assert report.state == "invalid"
        assert _has(report, "stale")
        assert _has(report, "'run-old'")

    def test_marker_for_another_process(self, make: Make) -> None:
        """A marker that names another process index is invalid."""
        ev = make(1)
        assert ev.marker is not None
        other = dataclasses.replace(ev, marker=dataclasses.replace(ev.marker, process_index=0))
        report = _check(make(0), other)
        assert report.invalid_markers == [1]
        assert _has(report, "marker names process 0")

    def test_unusable_marker(self, make: Make) -> None:
        """A marker file that did not parse makes the process invalid, with the parse error."""
        ev = dataclasses.replace(make(1), marker=None, marker_error="not valid JSON")
        report = _check(make(0), ev)
        assert report.invalid_markers == [1]
        assert _has(report, "marker is unusable: not valid JSON")

    def test_marker_without_process_finished(self, make: Make) -> None:
        """A marker over a log whose last event is not ``process_finished`` is invalid."""
        unfinished = make(1, outcome="abandon").summary
        report = _check(make(0), dataclasses.replace(make(1), summary=unfinished))
        assert report.invalid_markers == [1]
        assert _has(report, "no process_finished event")


class TestAgreement:
    """All processes must describe the same run."""

    def test_processes_disagree_on_run_id(self, make: Make) -> None:
        """Two run ids among the logs are invalid, and both are named."""
        report = _check(make(0, run_id="run-a"), make(1, run_id="run-b"))
        assert report.run_ids == ["run-a", "run-b"]
        assert report.state == "invalid"
        assert _has(report, "disagree on run_id: run-a, run-b")

    def test_processes_disagree_on_world_size(self, make: Make) -> None:
        """Two world sizes among the logs are invalid."""
        report = _check(make(0, world_size=2), make(1, world_size=3))
        assert report.state == "invalid"
        assert _has(report, "disagree on world_size")
        assert not _has(report, "no process has written process_started")
        assert _has(report, "world size unknown: the processes disagree on it")

    def test_log_names_another_experiment(self, make: Make) -> None:
        """A log that names another experiment id is invalid."""
        report = _check(make(0), make(1, experiment_id="exp-2"))
        assert report.state == "invalid"
        assert _has(report, "'exp-2'")

    def test_unreplayable_log(self, make: Make) -> None:
        """A log that could not be replayed is invalid, with its error."""
        report = _check(make(0), ProcessEvidence(index=1, log_error="line 3: not valid JSON"))
        assert report.state == "invalid"
        assert _has(report, "process 1 log cannot be replayed: line 3: not valid JSON")


class TestFailed:
    """A process that wrote ``process_failed`` fails the experiment."""

    def test_failed_process(self, make: Make) -> None:
        """A failed process is reported with its error, and no marker is expected from it."""
        report = _check(make(0), make(1, outcome="fail"))
        assert report.failed_indices == [1]
        assert report.state == "failed"
        assert report.missing_markers == []
        assert _has(report, "process 1 failed: RuntimeError: boom")


class TestState:
    """``state`` sums the report up in one word."""

    @pytest.mark.parametrize(
        ("fields", "state"),
        [
            ({}, "complete"),
            ({"reasons": ("waiting",), "missing_markers": (1,)}, "pending"),
            ({"reasons": ("waiting",), "pending_markers": (1,)}, "pending"),
            ({"reasons": ("x",), "failed_indices": (1,)}, "failed"),
            ({"reasons": ("x",), "failed_indices": (1,), "invalid_markers": (0,)}, "failed"),
            ({"reasons": ("x",), "invalid_markers": (0,)}, "invalid"),
            ({"reasons": ("x",), "duplicate_indices": (0,)}, "invalid"),
            ({"reasons": ("x",), "out_of_range_indices": (5,)}, "invalid"),
            ({"reasons": ("x",), "run_ids": ("a", "b")}, "invalid"),
            ({"reasons": ("invalid: something",)}, "invalid"),
        ],
    )
    def test_state_table(self, fields: dict[str, Any], state: str) -> None:
        """Failed wins over invalid, invalid over pending; no reasons means complete."""
        base: dict[str, Any] = {
            "experiment_id": EXP,
            "expected_processes": 2,
            "found_processes": 2,
            "found_indices": (0, 1),
            "missing_indices": (),
            "duplicate_indices": (),
            "out_of_range_indices": (),
            "missing_markers": (),
            "invalid_markers": (),
            "pending_markers": (),
            "failed_indices": (),
            "run_ids": ("a",),
            "reasons": (),
        }
        assert CompletenessReport(**{**base, **fields}).state == state


class TestLLenergyMeasureShape:
    """The report has LLenergyMeasure's shape: lists, ``marker_status``, ``error_message``."""

    def test_sequences_are_lists(self, make: Make) -> None:
        """Every index sequence is a list, as in LLenergyMeasure's pydantic report."""
        report = _check(make(0))
        for name in ("found_indices", "missing_indices", "duplicate_indices", "reasons"):
            assert isinstance(getattr(report, name), list), name

    def test_tuples_given_are_stored_as_lists(self) -> None:
        """Older callers that pass tuples (as the fields once were) still get lists."""
        report = CompletenessReport(
            experiment_id=EXP,
            expected_processes=1,
            found_processes=1,
            found_indices=(0,),
            missing_indices=(),
            duplicate_indices=(),
            out_of_range_indices=(),
            missing_markers=(),
            invalid_markers=(),
            pending_markers=(),
            failed_indices=(),
            run_ids=("a",),
        )
        assert (report.found_indices, report.run_ids, report.reasons) == ([0], ["a"], [])

    def test_marker_status_of_every_expected_index(self, make: Make) -> None:
        """Index 0 has a valid marker, 1 none (abandoned) and 2 no log at all."""
        report = _check(make(0, world_size=3), make(1, world_size=3, outcome="abandon"))
        assert report.marker_status == {0: True, 1: False, 2: False}
        assert report.missing_indices == [2]
        assert report.missing_markers == [1]

    def test_invalid_and_failed_markers_are_false(self, make: Make) -> None:
        """A marker that does not match its log, or a failed process, is not a valid marker."""
        wrong_sha = make(0, edit=lambda data: data.replace(b"10.0", b"11.0"))
        failed = make(1, outcome="fail")
        assert _check(wrong_sha, failed).marker_status == {0: False, 1: False}

    def test_complete_run_all_true(self, make: Make) -> None:
        """A complete run has a valid marker for every index."""
        report = _check(make(0), make(1))
        assert report.marker_status == {0: True, 1: True}
        assert report.is_complete and report.error_message is None

    def test_to_dict_has_upstream_fields(self, make: Make) -> None:
        """The JSON form carries ``marker_status`` (string keys, as JSON has them) and
        ``error_message``."""
        report = _check(make(0))
        d = report.to_dict()
        assert d["marker_status"] == {"0": True, "1": False}
        assert d["error_message"] == "; ".join(report.reasons)
        assert orjson.loads(orjson.dumps(d)) == d

    def test_legacy_marker_is_existence(self) -> None:
        """In the older layout a ``.completed_<i>`` file is the marker (what LLenergyMeasure
        checks)."""
        state = ProcessState()
        evidence = [
            ProcessEvidence(
                index=i, summary=summarize_process(state, i), legacy=True, legacy_marker=has
            )
            for i, has in ((0, True), (1, False))
        ]
        report = check_completeness(EXP, evidence, expected_processes=2)
        assert report.marker_status == {0: True, 1: False}
