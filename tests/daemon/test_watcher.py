"""The watcher daemon, run as a separate process on real files (issue 3's "done when" list)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from energy_ledger.simulate import simulate
from tests.daemon.procs import Daemon, hook_runs, hooks_finished, records, result_of
from tests.helpers import child_env, read_status, wait_for

# One writer process writes one rank of several experiments, flushing every few events, so the
# daemon sees many small appends; it prints its ground truth as JSON.
WRITER = """
import json, random, sys
from pathlib import Path
from energy_ledger.simulate import T0, simulate_process
root, prefix, rank, world, count, requests = sys.argv[1:7]
rank, world, count, requests = int(rank), int(world), int(count), int(requests)
truth = []
for n in range(count):
    experiment_id = f"{prefix}-{n}"
    p = simulate_process(
        Path(root), experiment_id, f"run-{n}", rank, world, requests=requests,
        t_start=T0 + 3600.0 * n, rng=random.Random(1000 * n + rank), flush_every_events=8,
    )
    truth.append({"experiment_id": experiment_id, "tokens": p.input_tokens + p.output_tokens,
                  "energy_j": (p.counter_end_mj - p.counter_start_mj) / 1000.0})
print(json.dumps(truth))
"""


def start_writers(
    root: Path, prefix: str, *, world: int, count: int, requests: int
) -> list[subprocess.Popen[str]]:
    """One writer process per rank, all running at once."""
    return [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WRITER,
                str(root),
                prefix,
                str(rank),
                str(world),
                str(count),
                str(requests),
            ],
            stdout=subprocess.PIPE,
            env=child_env(),
            text=True,
        )
        for rank in range(world)
    ]


def collect_truth(writers: list[subprocess.Popen[str]]) -> dict[str, dict[str, float]]:
    """Wait for the writers; total tokens and counter energy per experiment."""
    truth: dict[str, dict[str, list[float]]] = {}
    for writer in writers:
        out, _ = writer.communicate(timeout=60)
        assert writer.returncode == 0
        for row in json.loads(out):
            t = truth.setdefault(row["experiment_id"], {"tokens": [], "energy_j": []})
            t["tokens"].append(row["tokens"])
            t["energy_j"].append(row["energy_j"])
    return {
        k: {"tokens": sum(v["tokens"]), "energy_j": math.fsum(v["energy_j"])}
        for k, v in truth.items()
    }


def kill_writers(writers: list[subprocess.Popen[str]]) -> None:
    """Teardown for writers still running after a failure."""
    for writer in writers:
        if writer.poll() is None:
            writer.kill()
        writer.communicate()


MODES = [pytest.param([], id="inotify"), pytest.param(["--polling"], id="polling")]


@pytest.mark.slow
class TestConcurrentWriters:
    """Writers append while the daemon runs."""

    @pytest.mark.parametrize("mode", MODES)
    def test_each_experiment_emitted_once_with_true_totals(
        self,
        tmp_path: Path,
        daemons: Callable[..., Daemon],
        hook_cmd: str,
        hook_log: Path,
        mode: list[str],
    ) -> None:
        """Four rank processes write three experiments at once; each is emitted exactly once."""
        root = tmp_path / "root"
        root.mkdir()
        daemon = daemons(root, "--on-emit", hook_cmd, *mode)
        daemon.wait_ready()
        writers = start_writers(root, "cw", world=4, count=3, requests=120)
        try:
            truth = collect_truth(writers)
        finally:
            kill_writers(writers)
        wait_for(lambda: len(hooks_finished(root)) == 3, "three emissions with their hooks done")
        for experiment_id, expected in truth.items():
            result = result_of(root, experiment_id)
            assert result is not None
            assert result["total_tokens"] == expected["tokens"]
            assert result["total_energy_j"] == pytest.approx(expected["energy_j"], rel=1e-9)
            assert daemon.output.count(f"emitted {experiment_id} ") == 1
        runs = hook_runs(hook_log)
        assert {k: len(v) for k, v in runs.items()} == dict.fromkeys(truth, 1)
        assert {k: v[0].emission_id for k, v in runs.items()} == {
            k: r["emission_id"] for k, r in records(root).items()
        }
        assert daemon.terminate() == 0


@pytest.mark.slow
class TestEarlyMarker:
    """A marker that shows up before its log bytes is "not yet"."""

    @pytest.mark.parametrize("mode", MODES)
    def test_no_emission_before_the_bytes(
        self, tmp_path: Path, daemons: Callable[..., Daemon], mode: list[str]
    ) -> None:
        """Marker first, half the log, a pause: no result; the rest of the log: the result."""
        stage = tmp_path / "stage"
        simulate(stage, experiments=1, processes=2, requests=60, prefix="early")
        root = tmp_path / "root"
        (root / "raw" / "early-0000").mkdir(parents=True)
        daemon = daemons(root, *mode)
        daemon.wait_ready()
        src, dst = stage / "raw" / "early-0000", root / "raw" / "early-0000"
        logs = {i: (src / f"process_{i}.events.jsonl").read_bytes() for i in range(2)}
        for i in range(2):
            shutil.copyfile(src / f"process_{i}.done", dst / f"process_{i}.done")
            (dst / f"process_{i}.events.jsonl").write_bytes(logs[i][: len(logs[i]) // 2])

        def seen_not_yet() -> bool:
            status = read_status(root) or {}
            return any(
                a["experiment_id"] == "early-0000" and "not yet" in a["detail"]
                for a in status.get("active", [])
            )

        wait_for(seen_not_yet, "the daemon to see the early marker")
        time.sleep(0.5)
        assert result_of(root, "early-0000") is None
        for i in range(2):
            with open(dst / f"process_{i}.events.jsonl", "ab") as fh:
                fh.write(logs[i][len(logs[i]) // 2 :])
        result = wait_for(lambda: result_of(root, "early-0000"), "the result")
        assert result["total_tokens"] > 0
        assert daemon.terminate() == 0


def stage_experiment(stage: Path, prefix: str, **kwargs: Any) -> Path:
    """Simulate one experiment outside the watched root; return its folder."""
    simulate(stage, experiments=1, prefix=prefix, **kwargs)
    return stage / "raw" / f"{prefix}-0000"


@pytest.mark.slow
class TestBadInput:
    """Corrupt experiments are reported and skipped; the watch goes on."""

    def test_corrupt_experiments_reported_others_emitted(
        self, tmp_path: Path, daemons: Callable[..., Daemon]
    ) -> None:
        """A bad line, a duplicate index and an unsafe name; good experiments still emitted."""
        stage = tmp_path / "stage"
        bad_line = stage_experiment(stage, "badline", processes=2, requests=30)
        log = bad_line / "process_0.events.jsonl"
        lines = log.read_bytes().splitlines(keepends=True)
        log.write_bytes(b"".join([*lines[:3], b"{not json\n", *lines[4:]]))
        dup = stage_experiment(stage, "dup", processes=2, requests=30)
        for suffix in (".events.jsonl", ".done"):
            shutil.copyfile(dup / f"process_0{suffix}", dup / f"process_1{suffix}")
        unsafe = stage_experiment(stage, "unsafe", processes=1, requests=10)
        root = tmp_path / "root"
        (root / "raw").mkdir(parents=True)
        daemon = daemons(root)
        daemon.wait_ready()
        os.rename(bad_line, root / "raw" / "badline-0000")
        os.rename(dup, root / "raw" / "dup-0000")
        os.rename(unsafe, root / "raw" / "bad name!")
        simulate(root, experiments=2, processes=2, requests=30, prefix="good")

        def reported() -> dict[str, Any] | None:
            status = read_status(root) or {}
            errors = " ".join(
                str(e["experiment_id"]) + " " + e["error"] for e in status.get("errors", [])
            )
            rejected = [r["name"] for r in status.get("rejected", [])]
            ok = "badline-0000" in errors and "dup-0000" in errors and "bad name!" in rejected
            return status if ok and status.get("emitted") == 2 else None

        status = wait_for(reported, "the bad experiments reported and the good ones emitted")
        errors = {e["experiment_id"]: e["error"] for e in status["errors"]}
        assert "cannot be replayed" in errors["badline-0000"]
        assert "duplicate process indices" in errors["dup-0000"]
        assert result_of(root, "good-0000") and result_of(root, "good-0001")
        assert not (root / "aggregated" / "badline-0000.json").exists()
        assert not (root / "aggregated" / "dup-0000.json").exists()
        simulate(root, experiments=1, processes=2, requests=30, prefix="later")
        wait_for(lambda: result_of(root, "later-0000"), "an experiment after the bad ones")
        assert daemon.proc.poll() is None
        assert daemon.terminate() == 0


@pytest.mark.slow
class TestLifecycle:
    """One daemon per root, clean stops, cheap restarts, stale experiments."""

    def test_second_daemon_refuses_then_takes_over_after_kill(
        self, tmp_path: Path, daemons: Callable[..., Daemon]
    ) -> None:
        """A second daemon exits non-zero naming the holder; once that is killed, it starts."""
        root = tmp_path / "root"
        root.mkdir()
        first = daemons(root)
        first.wait_ready()
        second = daemons(root)
        assert second.proc.wait(timeout=20) == 3
        assert "already runs on this root" in second.output
        assert f"pid {first.proc.pid}" in second.output
        assert first.proc.poll() is None
        first.kill9()
        third = daemons(root)
        third.wait_ready()
        assert "taking over the lease" in third.output
        assert third.terminate() == 0

    def test_sigterm_stops_cleanly(self, tmp_path: Path, daemons: Callable[..., Daemon]) -> None:
        """SIGTERM: exit 0, lease released, status says stopped."""
        root = tmp_path / "root"
        root.mkdir()
        daemon = daemons(root, "--polling")
        daemon.wait_ready()
        assert daemon.terminate() == 0
        assert not (root / ".energy-ledger" / "lease.json").exists()
        assert (read_status(root) or {}).get("stopped") is True

    def test_restart_does_not_reread_emitted_experiments(
        self, tmp_path: Path, daemons: Callable[..., Daemon], hook_cmd: str, hook_log: Path
    ) -> None:
        """After a restart, emitted experiments are trusted: emptied logs go unnoticed."""
        root = tmp_path / "root"
        simulate(root, experiments=20, processes=2, requests=10, prefix="many")
        daemon = daemons(root, "--on-emit", hook_cmd)
        wait_for(lambda: (read_status(root) or {}).get("emitted") == 20, "20 emissions")
        wait_for(lambda: (read_status(root) or {}).get("hooks", {}).get("done") == 20, "hooks")
        assert daemon.terminate() == 0
        for log in (root / "raw").glob("*/*.events.jsonl"):
            log.write_bytes(b"")  # would make every experiment invalid if it were read again
        again = daemons(root, "--on-emit", hook_cmd)
        status = again.wait_ready()
        assert status["emitted"] == 20 and status["active_count"] == 0
        assert status["errors"] == []
        assert [len(runs) for runs in hook_runs(hook_log).values()] == [1] * 20
        assert again.terminate() == 0

    def test_stale_experiment_reported_and_recovered(
        self, tmp_path: Path, daemons: Callable[..., Daemon], hook_cmd: str, hook_log: Path
    ) -> None:
        """A crashed run idle past --stale-after is listed as stale and emitted as partial."""
        root = tmp_path / "root"
        simulate(root, experiments=1, processes=2, requests=20, crash=1, prefix="crashed")
        daemon = daemons(root, "--stale-after", "1", "--recover-stale", "--on-emit", hook_cmd)
        partial = root / "aggregated" / "crashed-0000.partial.json"
        wait_for(partial.exists, "the partial result")
        status = wait_for(
            lambda: (s := read_status(root)) and s["stale"] == ["crashed-0000"] and s, "stale"
        )
        assert status["partial"] == 1
        wait_for(
            lambda: "crashed-0000@partial" in hook_runs(hook_log), "the hook of the partial result"
        )
        assert json.loads(partial.read_bytes())["experiment_id"] == "crashed-0000"
        assert daemon.terminate() == 0
