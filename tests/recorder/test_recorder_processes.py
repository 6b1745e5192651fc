"""End-to-end: four recorder processes under torchrun-style variables, then the CLI (fake NVML)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from energy_ledger.gpu.fake import FakeNvml
from tests.helpers import child_env, read_events

WORLD_SIZE = 4

WORKER = """
import sys, time
from energy_ledger.recorder.recorder import ProcessRecorder

root, experiment_id, fail_rank = sys.argv[1], sys.argv[2], int(sys.argv[3])
with ProcessRecorder.from_env(root, experiment_id, sample_hz=20.0, snapshot_packages=False) as rec:
    with rec.window():
        for i in range(30):
            time.sleep(0.01)
            rec.request(latency_ms=10.0, input_tokens=5, output_tokens=7, ttft_ms=2.0)
            if i == 15 and rec.launch.process_index == fail_rank:
                raise RuntimeError("injected failure")
"""


def worker_env(**extra: str) -> dict[str, str]:
    """A recorder child's environment: fake NVML, and this machine's CUDA_VISIBLE_DEVICES
    dropped (each rank would look for its fake GPU in it)."""
    env = child_env(ENERGY_LEDGER_NVML="fake", **extra)
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def run_ranks(tmp_path: Path, fail_rank: int = -1, **extra: str) -> tuple[Path, list[int]]:
    """Start WORLD_SIZE workers as torchrun would (one per fake GPU), with ``extra``
    variables; return root and exit codes."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    root = tmp_path / "results"
    base = worker_env(
        WORLD_SIZE=str(WORLD_SIZE),
        LOCAL_WORLD_SIZE=str(WORLD_SIZE),
        TORCHELASTIC_RUN_ID="test-run-42",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT="29500",
        **extra,
    )
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(root), "exp4", str(fail_rank)],
            env=base | {"RANK": str(rank), "LOCAL_RANK": str(rank)},
            stderr=subprocess.PIPE,
        )
        for rank in range(WORLD_SIZE)
    ]
    codes = [p.wait(timeout=60) for p in procs]
    for p in procs:
        assert p.stderr is not None
        p.stderr.close()
    return root, codes


def python(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run this interpreter with ``args`` in ``env``, its output captured as text."""
    return subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m energy_ledger`` with this checkout's sources."""
    return python("-m", "energy_ledger", *args, env=child_env())


def log_events(root: Path, rank: int) -> list[dict[str, Any]]:
    """The decoded events of one rank's log."""
    return read_events(root / "raw" / "exp4" / f"process_{rank}.events.jsonl")


def window_edges(evs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The window_started and window_ended events."""
    start = next(e for e in evs if e["type"] == "window_started")
    end = next(e for e in evs if e["type"] == "window_ended")
    return start, end


@pytest.mark.slow
class TestFourRanks:
    def test_complete_ledger_and_energy(self, tmp_path: Path) -> None:
        """Four ranks give a ledger that validate calls complete and replay aggregates to the
        fake counter's delta summed over the four distinct GPUs."""
        root, codes = run_ranks(tmp_path)
        assert codes == [0] * WORLD_SIZE
        validate = cli("validate", str(root / "raw" / "exp4"))
        assert validate.returncode == 0, validate.stdout + validate.stderr
        replay = cli("replay", str(root))
        assert replay.returncode == 0, replay.stdout + replay.stderr
        result = orjson.loads((root / "aggregated" / "exp4.json").read_bytes())

        fake = FakeNvml(WORLD_SIZE)
        logged_j = formula_j = 0.0
        uuids = set()
        for rank in range(WORLD_SIZE):
            evs = log_events(root, rank)
            uuids.add(evs[0]["gpu_uuid"])
            start, end = window_edges(evs)
            logged_j += (end["energy_mj"] - start["energy_mj"]) / 1000
            device = fake.devices[rank]
            formula_j += (device.energy_at(end["t"]) - device.energy_at(start["t"])) / 1000
        assert len(uuids) == WORLD_SIZE
        assert result["total_energy_j"] == pytest.approx(logged_j, rel=1e-12)
        # The counter is read just before each edge is stamped: a few mJ at most.
        assert result["total_energy_j"] == pytest.approx(formula_j, abs=0.02)
        assert result["total_tokens"] == WORLD_SIZE * 30 * 12

    def test_tensor_parallel_ranks_count_requests_once(self, tmp_path: Path) -> None:
        """With ``ENERGY_LEDGER_TP_SIZE=2`` ranks 0 and 2 own their groups' requests: the
        experiment counts two ranks' tokens, and every rank's energy."""
        root, codes = run_ranks(tmp_path, ENERGY_LEDGER_TP_SIZE="2")
        assert codes == [0] * WORLD_SIZE
        owners = [log_events(root, rank)[0]["counts_requests"] for rank in range(WORLD_SIZE)]
        assert owners == [rank % 2 == 0 for rank in range(WORLD_SIZE)]
        replay = cli("replay", str(root))
        assert replay.returncode == 0, replay.stdout + replay.stderr
        result = orjson.loads((root / "aggregated" / "exp4.json").read_bytes())
        assert result["total_tokens"] == sum(owners) * 30 * 12
        logged_j = 0.0
        for rank in range(WORLD_SIZE):
            start, end = window_edges(log_events(root, rank))
            logged_j += (end["energy_mj"] - start["energy_mj"]) / 1000
        assert result["total_energy_j"] == pytest.approx(logged_j, rel=1e-12)

    def test_failed_rank_is_reported_by_recover(self, tmp_path: Path) -> None:
        """A rank that raises leaves process_failed and no marker; validate says incomplete
        and recover writes a partial result that names the failure."""
        root, codes = run_ranks(tmp_path, fail_rank=1)
        assert codes[1] != 0 and codes[0] == codes[2] == codes[3] == 0
        evs = log_events(root, 1)
        assert evs[-1]["type"] == "process_failed"
        assert "injected failure" in evs[-1]["error"]
        experiment = root / "raw" / "exp4"
        assert not (experiment / "process_1.done").exists()
        assert (experiment / "process_0.done").exists()
        assert cli("validate", str(experiment)).returncode == 1
        recover = cli("recover", str(experiment))
        # A partial result is written, and exit 1 says it is partial (README, exit codes).
        assert recover.returncode == 1, recover.stdout + recover.stderr
        assert "process 1" in recover.stdout or "process_1" in recover.stdout
        assert "injected failure" in recover.stdout
        partial = orjson.loads((root / "aggregated" / "exp4.partial.json").read_bytes())
        assert partial["total_energy_j"] > 0


@pytest.mark.slow
class TestExample:
    def test_torchrun_example_runs_on_fake_nvml(self, tmp_path: Path) -> None:
        """The torchrun example runs without a GPU when the launcher variables are set by hand."""
        example = Path(__file__).resolve().parents[2] / "examples" / "torchrun_example.py"
        env = worker_env(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", ENERGY_LEDGER_RUN_ID="example")
        args = ["--root", str(tmp_path), "--requests", "20", "--baseline-sec", "0.2"]
        done = python(str(example), *args, env=env)
        assert done.returncode == 0, done.stderr
        assert (tmp_path / "raw" / "torchrun-demo" / "process_0.done").exists()
