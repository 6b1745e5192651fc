"""``energy-ledger watch s3://...`` as real processes on SeaweedFS (issue 13).

- Recorder processes write an experiment's segments while a daemon watches: it emits the
  result once the markers land, and runs the hook once.
- Three daemons on one bucket with 200 experiments, some written before they start and the
  rest while they run, and random daemons killed with SIGKILL and started again throughout:
  every experiment has one result and one emission record, and every hook ran exactly once,
  with the emission id its record holds.
- A store that ignores conditional writes is refused at start-up, with the reason.
"""

from __future__ import annotations

import csv
import io
import os
import random
import signal
import stat
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import orjson
import pytest

from energy_ledger.store.bucket_claims import read_emission
from energy_ledger.store.objects import open_objects
from energy_ledger.store.objectstore import ObjectStore
from tests.helpers import child_env, wait_for, write_segmented_experiment
from tests.s3.fake import FakeS3
from tests.s3.server import SeaweedServer

RECORDER = """
import sys
from energy_ledger.recorder.recorder import ProcessRecorder

root, experiment_id, requests = sys.argv[1], sys.argv[2], int(sys.argv[3])
rec = ProcessRecorder.from_env(
    root, experiment_id, sample_hz=20.0, snapshot_packages=False,
    writer_options={"segment_events": 64, "segment_sec": 0.3},
)
with rec, rec.window():
    for i in range(requests):
        rec.request(latency_ms=10.0, input_tokens=5, output_tokens=7, ttft_ms=2.0)
        if i % 50 == 0:
            import time; time.sleep(0.05)
"""


def hook_command(tmp_path: Path) -> tuple[str, Path]:
    """A hook appending ``<emission id> <experiment id>`` to a file (one O_APPEND write)."""
    out = tmp_path / "hook-runs.txt"
    hook = tmp_path / "hook.sh"
    hook.write_text(f'#!/bin/sh\nprintf \'%s %s\\n\' "$ENERGY_LEDGER_EMISSION_ID" "$2" >> {out}\n')
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR)
    return str(hook), out


def start_daemon(url: str, env: dict[str, str], log: Path, *extra: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "energy_ledger", "-v", "watch", url, *extra],
            env={**os.environ, **env},
            stdout=fh,
            stderr=subprocess.STDOUT,
        )


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=30)


def keys(objects: ObjectStore, prefix: str) -> set[str]:
    return {info.key for info in objects.list(prefix)}


def hook_lines(out: Path) -> list[list[str]]:
    return [line.split() for line in out.read_text().splitlines()] if out.exists() else []


@pytest.mark.slow
def test_a_daemon_emits_what_recorders_write_while_it_watches(
    tmp_path: Path, s3_server: SeaweedServer, s3_url: str, s3_env: dict[str, str]
) -> None:
    hook, out = hook_command(tmp_path)
    log = tmp_path / "daemon.log"
    daemon = start_daemon(s3_url, s3_env, log, "--poll-interval", "0.2", "--on-emit", hook)
    try:
        script = tmp_path / "recorder.py"
        script.write_text(RECORDER)
        env = child_env(
            ENERGY_LEDGER_NVML="fake", ENERGY_LEDGER_RUN_ID="run-w", WORLD_SIZE="2", **s3_env
        )
        env.pop("CUDA_VISIBLE_DEVICES", None)
        ranks = [
            subprocess.Popen(
                [sys.executable, str(script), s3_url, "live", "300"],
                env=env | {"RANK": str(rank), "LOCAL_RANK": str(rank)},
                stderr=subprocess.PIPE,
            )
            for rank in range(2)
        ]
        for rank in ranks:
            _, err = rank.communicate(timeout=120)
            assert rank.returncode == 0, err
        objects = open_objects(s3_url)
        wait_for(lambda: hook_lines(out), "the hook's run", 60)
    finally:
        code = stop(daemon)
    text = log.read_text()
    assert code == 0, text
    assert "Traceback" not in text, text
    result = orjson.loads(objects.get("aggregated/live.json"))
    assert len(result["process_results"]) == 2
    # 300 requests per rank, 7 output tokens each, as the recorders wrote them.
    assert sum(p["inference_metrics"]["output_tokens"] for p in result["process_results"]) == 4200
    record = read_emission(objects, "live")
    assert record is not None
    assert hook_lines(out) == [[record.body["emission_id"], "live"]]


@pytest.mark.slow
def test_three_daemons_and_random_kills_emit_each_experiment_once(
    tmp_path: Path, s3_server: SeaweedServer, s3_url: str, s3_env: dict[str, str]
) -> None:
    experiments = [f"exp-{n:03d}" for n in range(200)]
    objects = open_objects(s3_url)
    for experiment_id in experiments[:100]:
        write_segmented_experiment(objects, experiment_id, processes=1, requests=8)
    hook, out = hook_command(tmp_path)
    args = ("--poll-interval", "0.2", "--lease-timeout", "2", "--on-emit", hook)
    logs = [tmp_path / f"daemon-{n}.log" for n in range(3)]
    daemons = [start_daemon(s3_url, s3_env, log, *args) for log in logs]
    writer_error: list[BaseException] = []

    def write_rest() -> None:
        try:
            for experiment_id in experiments[100:]:
                write_segmented_experiment(objects, experiment_id, processes=1, requests=8)
                time.sleep(0.02)
        except BaseException as exc:  # reported by the test's thread
            writer_error.append(exc)

    writer = threading.Thread(target=write_rest)
    writer.start()
    rng = random.Random(13)
    kills = 0
    done = lambda: len({k for k in keys(objects, "emissions/") if k.endswith("@done.json")})  # noqa: E731
    try:
        deadline = time.monotonic() + 25
        while time.monotonic() < deadline and done() < len(experiments) - 20:
            time.sleep(rng.uniform(0.5, 1.5))
            victim = rng.randrange(3)
            daemons[victim].kill()  # SIGKILL: no release, no clean-up
            daemons[victim].wait()
            kills += 1
            daemons[victim] = start_daemon(s3_url, s3_env, logs[victim], *args)
        writer.join(timeout=60)
        assert not writer_error, writer_error
        wait_for(lambda: done() == len(experiments), "a @done marker per experiment", 150)
        time.sleep(1.0)  # a rerun, were there one, would have time to show
    finally:
        codes = [stop(daemon) for daemon in daemons]
    texts = [log.read_text() for log in logs]
    assert kills >= 3
    assert codes == [0, 0, 0], texts
    assert not any("Traceback" in text for text in texts), texts

    results = {k for k in keys(objects, "aggregated/") if k.endswith(".json")}
    assert results == {f"aggregated/{e}.json" for e in experiments}
    records = {e: read_emission(objects, e) for e in experiments}
    assert all(record is not None for record in records.values())
    lines = hook_lines(out)
    assert sorted(line[1] for line in lines) == experiments  # each hook ran once
    for emission_id, experiment_id in lines:
        record = records[experiment_id]
        assert record is not None and record.body["emission_id"] == emission_id
    attempts = [k for k in keys(objects, "emissions/") if "@attempt-" in k]
    assert len(attempts) == len(experiments)  # no attempt was started twice or rerun
    rows = list(csv.DictReader(io.StringIO(objects.get("aggregated/results.csv").decode())))
    assert sorted(row["experiment_id"] for row in rows) == experiments


def test_a_store_that_ignores_conditional_writes_is_refused(tmp_path: Path) -> None:
    with FakeS3("ignore-conditions") as fake:
        env = {**os.environ, **fake.env("AKIAFAKE", "fake-secret")}
        proc = subprocess.run(
            [sys.executable, "-m", "energy_ledger", "watch", "s3://bucket/root"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "does not honour conditional writes" in proc.stderr, proc.stderr
    assert "fake-secret" not in proc.stderr


@pytest.mark.parametrize("flag", [("--report",), ("--recover-stale",), ("--state-dir", "x")])
def test_folder_only_options_are_refused_on_a_bucket(
    s3_prefix_url: str, s3_env: dict[str, str], flag: tuple[str, ...]
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "energy_ledger", "watch", s3_prefix_url, *flag],
        env={**os.environ, **s3_env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert flag[0] in proc.stderr and "folder root only" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_metrics_of_a_bucket_daemon(
    tmp_path: Path, s3_prefix_url: str, s3_env: dict[str, str]
) -> None:
    """``watch s3://... --metrics-port 0``: states, emissions, claims held and the live figures
    of the experiment still running, checked against what the test wrote."""
    from prometheus_client.parser import text_string_to_metric_families

    objects = open_objects(s3_prefix_url)
    for experiment_id in ("done-a", "done-b", "running"):
        write_segmented_experiment(objects, experiment_id, processes=2, requests=40)
    objects.delete("raw/running/process_1.done")  # its second process is still going
    log = tmp_path / "daemon.log"
    daemon = start_daemon(
        s3_prefix_url, s3_env, log, "--poll-interval", "0.2", "--metrics-port", "0"
    )
    try:
        line = wait_for(
            lambda: next((x for x in log.read_text().splitlines() if "serving metrics" in x), ""),
            "the metrics server's address in the log",
            30,
        )
        url = line.rsplit(" ", 1)[-1]
        wait_for(lambda: objects.head("emissions/done-b.json"), "both emissions", 30)

        def samples() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
            text = urllib.request.urlopen(url, timeout=5).read().decode()
            return {
                (s.name, frozenset(s.labels.items())): s.value
                for family in text_string_to_metric_families(text)
                for s in family.samples
            }

        def state(name: str) -> float:
            return samples().get(("energy_ledger_experiments", frozenset({("state", name)})), -1)

        wait_for(lambda: state("emitted") == 2, "two emitted in /metrics", 30)
        got = samples()
    finally:
        code = stop(daemon)
    assert code == 0, log.read_text()
    assert state_of(got, "pending") == 1
    assert got[("energy_ledger_emissions_total", frozenset({("kind", "complete")}))] == 2
    claims = [v for (name, _), v in got.items() if name == "energy_ledger_claims_held"]
    assert claims == [1.0]  # the running experiment's
    assert not any(name == "energy_ledger_lease_held" for name, _ in got)
    # 40 requests per process, both processes' requests written: 80 so far.
    running = frozenset({("experiment", "running")})
    assert got[("energy_ledger_experiment_requests", running)] == 80
    assert got[("energy_ledger_experiment_processes_finished", running)] == 2
    assert got[("energy_ledger_experiment_processes_expected", running)] == 2


def state_of(got: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str) -> float:
    return got.get(("energy_ledger_experiments", frozenset({("state", name)})), -1)
