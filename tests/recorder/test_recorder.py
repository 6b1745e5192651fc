"""Tests of ``ProcessRecorder`` and of reading the launch from the environment (fake NVML)."""

from __future__ import annotations

import fractions
from pathlib import Path
from typing import Any

import pytest

from energy_ledger.core.replay import replay_bytes
from energy_ledger.exceptions import LedgerError, NvmlUnavailableError
from energy_ledger.gpu.fake import FakeFaults, FakeNvml, fake_uuid
from energy_ledger.models import EnvironmentSnapshot
from energy_ledger.recorder.launch import LaunchInfo
from energy_ledger.recorder.payloads import config_hash
from energy_ledger.recorder.recorder import ProcessRecorder
from tests.helpers import read_events


def of_type(evs: list[dict[str, Any]], type_name: str) -> list[dict[str, Any]]:
    """The events of one type."""
    return [e for e in evs if e["type"] == type_name]


def recorder(
    root: Path,
    *,
    fake: FakeNvml | None = None,
    rank: int = 0,
    world: int = 1,
    spec: str = "0",
    **options: Any,
) -> ProcessRecorder:
    """A recorder on a fake GPU with a fixed launch."""
    launch = LaunchInfo(rank, world, rank, "run-1", spec)
    return ProcessRecorder(
        root,
        "exp",
        launch=launch,
        nvml=fake or FakeNvml(4),
        sample_hz=50.0,
        snapshot_packages=False,
        **options,
    )


def run_window(rec: ProcessRecorder, requests: int = 3) -> None:
    """A short run: enter, open a window, record some requests, leave."""
    with rec, rec.window():
        for _ in range(requests):
            rec.request(latency_ms=10.0, input_tokens=4, output_tokens=8, ttft_ms=2.0)


class TestRecorderRun:
    def test_event_sequence_and_marker(self, tmp_path: Path) -> None:
        """A normal run writes the events in order, finishes, and leaves a valid marker."""
        rec = recorder(tmp_path, config={"model_name": "m", "batch": 8})
        with rec:
            assert rec.baseline(seconds=0.05) is not None
            with rec.window():
                rec.request(latency_ms=10.0, input_tokens=4, output_tokens=8, itl_ms=[1, 2.5])
        evs = read_events(rec.log_path)
        kinds = [e["type"] for e in evs]
        assert kinds[0] == "process_started" and kinds[-1] == "process_finished"
        order = [k for k in kinds if k not in ("sample", "warning")]
        assert order == [
            "process_started",
            "clock",
            "baseline",
            "window_started",
            "clock",
            "request",
            "window_ended",
            "clock",
            "clock",
            "process_finished",
        ]
        assert [e["seq"] for e in evs] == list(range(len(evs)))
        assert len(of_type(evs, "sample")) >= 2
        assert of_type(evs, "request")[0]["itl_ms"] == [1.0, 2.5]
        assert rec.marker is not None and rec.marker.final_seq == len(evs) - 1
        assert Path(rec.log_path).with_name("process_0.done").exists()

    def test_process_started_fields(self, tmp_path: Path) -> None:
        """process_started names the run, the GPU by UUID, the config and a valid snapshot."""
        rec = recorder(tmp_path, fake=FakeNvml(4), spec=fake_uuid(2), config={"model_name": "m"})
        run_window(rec)
        started = read_events(rec.log_path)[0]
        assert started["run_id"] == "run-1" and started["gpu_uuid"] == fake_uuid(2)
        assert started["gpu_id"] == 2 and started["model_name"] == "m"
        assert started["measurement_config_hash"] == config_hash({"model_name": "m"})
        EnvironmentSnapshot.model_validate(started["environment"])
        assert started["environment"]["hardware"]["gpu"]["nvml_backend"] == "fake"

    def test_energy_is_counter_delta(self, tmp_path: Path) -> None:
        """The window carries counter readings and the replay's energy is their delta."""
        rec = recorder(tmp_path)
        run_window(rec)
        evs = read_events(rec.log_path)
        start = of_type(evs, "window_started")[0]["energy_mj"]
        end = of_type(evs, "window_ended")[0]["energy_mj"]
        state = replay_bytes(Path(rec.log_path).read_bytes()).state
        assert end > start
        assert (state.window_start_energy_mj, state.window_end_energy_mj) == (start, end)
        assert state.requests == 3 and state.output_tokens == 24 and state.finished

    def test_exception_leaves_failed_and_no_marker(self, tmp_path: Path) -> None:
        """An exception writes process_failed, no marker, and reaches the caller."""
        rec = recorder(tmp_path)
        with pytest.raises(RuntimeError, match="boom"), rec, rec.window():
            rec.request(latency_ms=1.0, input_tokens=1, output_tokens=1)
            raise RuntimeError("boom")
        evs = read_events(rec.log_path)
        assert evs[-1] == {**evs[-1], "type": "process_failed", "error": "RuntimeError: boom"}
        assert of_type(evs, "window_ended")
        assert not Path(rec.log_path).with_name("process_0.done").exists()

    def test_sys_exit_zero_is_success(self, tmp_path: Path) -> None:
        """sys.exit(0) inside the block still finishes the log normally."""
        rec = recorder(tmp_path)
        with pytest.raises(SystemExit), rec:
            raise SystemExit(0)
        assert read_events(rec.log_path)[-1]["type"] == "process_finished"

    def test_misuse(self, tmp_path: Path) -> None:
        """request() outside the window, a second window and a late baseline are refused."""
        rec = recorder(tmp_path)
        with rec:
            with pytest.raises(LedgerError, match="outside window"):
                rec.request(latency_ms=1.0, input_tokens=1, output_tokens=1)
            with rec.window():
                pass
            with pytest.raises(LedgerError, match="one window"), rec.window():
                pass
            with pytest.raises(LedgerError, match="before window"):
                rec.baseline(seconds=0.01)
        with pytest.raises(LedgerError, match="already finished"):
            rec.warning("late")

    def test_existing_log_is_refused(self, tmp_path: Path) -> None:
        """A second recorder for the same rank and experiment cannot overwrite the log."""
        run_window(recorder(tmp_path))
        with pytest.raises(LedgerError, match="already exists"):
            recorder(tmp_path).start()

    def test_peer_with_other_run_id(self, tmp_path: Path) -> None:
        """A rank whose peer's log names another run id refuses to start."""
        run_window(recorder(tmp_path, rank=0, world=2))
        other = ProcessRecorder(
            tmp_path, "exp", launch=LaunchInfo(1, 2, 1, "run-2", "1"), nvml=FakeNvml(2)
        )
        with pytest.raises(LedgerError, match="could not agree on a run id"):
            other.start()
        assert not Path(other.log_path).exists()


class TestRequestValues:
    def test_coerces_number_like_values(self, tmp_path: Path) -> None:
        """Objects with __index__ and numbers like Fraction are stored as int and float."""

        class Tokens:
            def __index__(self) -> int:
                return 7

        rec = recorder(tmp_path)
        with rec, rec.window():
            rec.request(
                latency_ms=fractions.Fraction(3, 2),  # type: ignore[arg-type]
                input_tokens=Tokens(),  # type: ignore[arg-type]
                output_tokens=2,
                ttft_ms=1,
            )
        req = of_type(read_events(rec.log_path), "request")[0]
        assert (req["latency_ms"], req["input_tokens"], req["ttft_ms"]) == (1.5, 7, 1.0)

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"input_tokens": True},
            {"output_tokens": -1},
            {"latency_ms": "fast"},
            {"ttft_ms": None, "itl_ms": ["a"]},
            {"ttft_ms": "x"},
            {"latency_ms": float("nan")},
            {"ttft_ms": float("inf")},
            {"itl_ms": [1.0, float("nan")]},
        ],
    )
    def test_rejects_bad_values(self, tmp_path: Path, kwargs: dict[str, Any]) -> None:
        """Bools, negatives, NaN/inf and non-numbers are a LedgerError; nothing is written."""
        values: dict[str, Any] = {"latency_ms": 1.0, "input_tokens": 1, "output_tokens": 1}
        rec = recorder(tmp_path)
        with rec, rec.window(), pytest.raises(LedgerError):
            rec.request(**{**values, **kwargs})
        assert not of_type(read_events(rec.log_path), "request")


class TestNvmlFaults:
    def test_errors_mid_run_become_warnings(self, tmp_path: Path) -> None:
        """Failing NVML reads during the window are warnings; the program is unaffected."""
        fake = FakeNvml(1, faults=FakeFaults.parse("power_w@*;temperature_c@2,3,4"))
        rec = recorder(tmp_path, fake=fake)
        run_window(rec)
        evs = read_events(rec.log_path)
        messages = [w["message"] for w in of_type(evs, "warning")]
        assert any("power_w failed" in m for m in messages)
        assert any("temperature_c failed" in m for m in messages)
        assert all("power_w" not in s for s in of_type(evs, "sample"))
        assert of_type(evs, "window_ended")[0].get("energy_mj") is not None
        assert evs[-1]["type"] == "process_finished"

    @pytest.mark.parametrize(("faults", "has_event"), [("power_w@1", True), ("power_w@*", False)])
    def test_baseline_with_failing_reads(
        self, tmp_path: Path, faults: str, has_event: bool
    ) -> None:
        """Failed power reads during the baseline are a warning; with no read, no baseline."""
        rec = recorder(tmp_path, fake=FakeNvml(1, faults=FakeFaults.parse(faults)))
        with rec:
            assert (rec.baseline(seconds=0.1) is not None) is has_event
        evs = read_events(rec.log_path)
        assert bool(of_type(evs, "baseline")) is has_event
        assert any("power reads failed" in w["message"] for w in of_type(evs, "warning"))

    def test_failed_boundary_read_falls_back_to_power(self, tmp_path: Path) -> None:
        """A failed counter read at the window start leaves both edges without energy_mj."""
        rec = recorder(tmp_path, fake=FakeNvml(1, faults=FakeFaults.parse("energy_mj@2")))
        run_window(rec)
        evs = read_events(rec.log_path)
        assert "energy_mj" not in of_type(evs, "window_started")[0]
        assert "energy_mj" not in of_type(evs, "window_ended")[0]
        assert any("window start failed" in w["message"] for w in of_type(evs, "warning"))
        assert replay_bytes(Path(rec.log_path).read_bytes()).state.power_samples >= 2

    def test_counter_reset(self, tmp_path: Path) -> None:
        """A counter reset in the window drops energy_mj from window_ended and warns."""
        rec = recorder(tmp_path, fake=FakeNvml(1, faults=FakeFaults(counter_reset_at_read=4)))
        run_window(rec)
        evs = read_events(rec.log_path)
        assert "energy_mj" in of_type(evs, "window_started")[0]
        assert "energy_mj" not in of_type(evs, "window_ended")[0]
        assert sum("counter reset" in w["message"] for w in of_type(evs, "warning")) == 1

    def test_missing_counter(self, tmp_path: Path) -> None:
        """A GPU without the counter is said so once and only power is sampled."""
        rec = recorder(tmp_path, fake=FakeNvml(1, faults=FakeFaults(no_energy_counter=True)))
        run_window(rec)
        evs = read_events(rec.log_path)
        assert any("no NVML energy counter" in w["message"] for w in of_type(evs, "warning"))
        assert all("energy_mj" not in e for e in evs if e["type"] != "process_started")
        assert all("power_w" in s for s in of_type(evs, "sample"))

    def test_mig_warning(self, tmp_path: Path) -> None:
        """A MIG instance is recorded under its parent GPU with the parent-GPU warning."""
        fake = FakeNvml(1, mig_instances=2)
        rec = recorder(tmp_path, fake=fake, spec=fake.mig_devices[1].uuid)
        run_window(rec)
        evs = read_events(rec.log_path)
        started = evs[0]
        assert started["gpu_is_mig"] and started["gpu_mig_profile"] == "1g.10gb"
        assert started["gpu_uuid"] == fake_uuid(0)
        assert any("parent GPU" in w["message"] for w in of_type(evs, "warning"))

    def test_nvml_unavailable(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without NVML the recorder says so at the start and writes nothing."""
        monkeypatch.setenv("ENERGY_LEDGER_NVML", "fake")
        monkeypatch.setenv("ENERGY_LEDGER_FAKE_FAULTS", "unavailable")
        rec = ProcessRecorder(tmp_path, "exp", launch=LaunchInfo(0, 1, 0, "r", "0"))
        with pytest.raises(NvmlUnavailableError), rec:
            pass
        assert not (tmp_path / "raw" / "exp").exists()


class TestRequestOwnership:
    """Under tensor parallelism only the first rank of each group counts its requests."""

    def test_tp_size_marks_one_rank_per_group(self, tmp_path: Path) -> None:
        """With 4 ranks in groups of 2, ranks 0 and 2 count and ranks 1 and 3 do not."""
        written = []
        for rank in range(4):
            rec = recorder(tmp_path, rank=rank, world=4, spec=str(rank), tensor_parallel_size=2)
            run_window(rec)
            written.append(read_events(rec.log_path)[0]["counts_requests"])
        assert written == [rank % 2 == 0 for rank in range(4)]

    def test_default_counts(self, tmp_path: Path) -> None:
        """Without a size or an override every rank counts (the format's default, true)."""
        rec = recorder(tmp_path, rank=1, world=2, spec="1")
        run_window(rec)
        assert read_events(rec.log_path)[0]["counts_requests"] is True

    @pytest.mark.parametrize(
        ("rank", "tp_size", "override", "expected"),
        [(0, None, False, False), (1, 2, True, True), (0, 2, False, False)],
    )
    def test_explicit_override_wins(
        self, tmp_path: Path, rank: int, tp_size: int | None, override: bool, expected: bool
    ) -> None:
        """``counts_requests=`` is written as given, whatever the tensor-parallel size says."""
        rec = recorder(
            tmp_path,
            rank=rank,
            world=2,
            spec=str(rank),
            tensor_parallel_size=tp_size,
            counts_requests=override,
        )
        run_window(rec)
        assert read_events(rec.log_path)[0]["counts_requests"] is expected

    @pytest.mark.parametrize("tp_size", [0, 3, -2])
    def test_bad_size_is_refused_before_anything_is_written(
        self, tmp_path: Path, tp_size: int
    ) -> None:
        """A size below 1 or one that does not divide the world size is a ``LedgerError``."""
        with pytest.raises(LedgerError, match="tensor_parallel_size"):
            recorder(tmp_path, rank=0, world=4, tensor_parallel_size=tp_size)
        assert not (tmp_path / "raw").exists()

    @pytest.mark.parametrize(
        ("rank", "argument", "expected"), [(2, None, True), (1, None, False), (2, 4, False)]
    )
    def test_from_env_reads_the_size_and_the_argument_wins(
        self, tmp_path: Path, rank: int, argument: int | None, expected: bool
    ) -> None:
        """``ENERGY_LEDGER_TP_SIZE=2`` decides, unless ``tensor_parallel_size`` is passed."""
        environ = {
            "RANK": str(rank),
            "WORLD_SIZE": "4",
            "LOCAL_RANK": str(rank),
            "ENERGY_LEDGER_RUN_ID": "tp",
            "ENERGY_LEDGER_TP_SIZE": "2",
        }
        rec = ProcessRecorder.from_env(
            tmp_path,
            "exp",
            environ=environ,
            nvml=FakeNvml(4),
            snapshot_packages=False,
            tensor_parallel_size=argument,
        )
        run_window(rec)
        assert read_events(rec.log_path)[0]["counts_requests"] is expected
