"""The command line on a bucket root (SeaweedFS): ``replay``, ``status``, ``validate`` and
``recover`` take an ``s3://`` URL; the commands that read folders only refuse one clearly."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import orjson
import pytest

from energy_ledger.store.objects import open_objects
from energy_ledger.store.segments import marker_key
from tests.helpers import write_segmented_experiment

PROCESSES = 2


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m energy_ledger ARGS`` in a fresh process with the server's environment."""
    proc = subprocess.run(
        [sys.executable, "-m", "energy_ledger", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **env},
    )
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    return proc


def as_json(proc: subprocess.CompletedProcess[str]) -> Any:
    return orjson.loads(proc.stdout)


def test_replay_status_validate_recover_on_a_bucket(s3_url: str, s3_env: dict[str, str]) -> None:
    bucket = open_objects(s3_url)
    write_segmented_experiment(bucket, "done", processes=PROCESSES)
    write_segmented_experiment(bucket, "crashed", processes=PROCESSES)
    bucket.delete(marker_key("crashed", 1))  # its second process never finished

    replayed = cli(s3_env, "replay", s3_url, "--json")
    assert replayed.returncode == 1, replayed.stderr  # one experiment is not complete
    outcome = as_json(replayed)
    assert outcome["root"] == s3_url
    by_id = {e["experiment_id"]: e for e in outcome["experiments"]}
    assert by_id["done"]["action"] == "written"
    assert by_id["crashed"]["state"] != "complete"
    assert bucket.head("aggregated/done.json") is not None
    assert bucket.head("aggregated/crashed.json") is None

    again = as_json(cli(s3_env, "replay", s3_url, "--json"))
    assert {e["experiment_id"]: e["action"] for e in again["experiments"]}["done"] == "up-to-date"

    status = as_json(cli(s3_env, "status", s3_url, "--json"))
    states = {e["experiment_id"]: (e["state"], e["result"]) for e in status["experiments"]}
    assert states["done"][0] == "complete"
    assert states["crashed"][0] != "complete"
    assert status["daemon"] is None

    ok = cli(s3_env, "validate", f"{s3_url}/raw/done")
    assert ok.returncode == 0 and "done: COMPLETE" in ok.stdout
    not_ok = cli(s3_env, "validate", f"{s3_url}/raw/crashed", "--json")
    assert not_ok.returncode == 1
    assert as_json(not_ok)["is_complete"] is False

    recovered = cli(s3_env, "recover", f"{s3_url}/raw/crashed", "--json")
    assert recovered.returncode == 1, recovered.stderr  # a partial result
    assert as_json(recovered)["partial"] is True
    assert bucket.head("aggregated/crashed.partial.json") is not None


@pytest.mark.parametrize(
    "args",
    [
        ("export", "{url}", "--format", "parquet"),
        ("replay", "{url}", "--report"),
        ("status", "{url}", "--watch"),
    ],
)
def test_folder_only_commands_refuse_a_bucket(
    s3_prefix_url: str, s3_env: dict[str, str], args: tuple[str, ...]
) -> None:
    proc = cli(s3_env, *(a.format(url=s3_prefix_url) for a in args))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "bucket" in proc.stderr or "local" in proc.stderr, proc.stderr


def test_status_names_the_claims_daemons_hold(s3_prefix_url: str, s3_env: dict[str, str]) -> None:
    from energy_ledger.store.bucket_claims import Claimer

    bucket = open_objects(s3_prefix_url)
    write_segmented_experiment(bucket, "busy", processes=1)
    write_segmented_experiment(bucket, "idle", processes=1)
    claimer = Claimer(bucket, owner="gpu-host-7:4242:abc")
    claim = claimer.claim("busy", ttl_sec=30.0)
    assert claim is not None
    shown = as_json(cli(s3_env, "status", s3_prefix_url, "--json"))
    assert shown["daemon"] == {
        "claims": [
            {"experiment_id": "busy", "owner": "gpu-host-7:4242:abc", "term": 1, "released": False}
        ]
    }
    text = cli(s3_env, "status", s3_prefix_url).stdout
    assert "daemons: 1 holding 1 claim(s)" in text
    assert "busy: gpu-host-7:4242:abc (term 1)" in text
    assert claimer.release(claim)
    text = cli(s3_env, "status", s3_prefix_url).stdout
    assert "daemons: 0 holding 0 claim(s)" in text


def test_show_reads_results_from_a_bucket(s3_prefix_url: str, s3_env: dict[str, str]) -> None:
    bucket = open_objects(s3_prefix_url)
    write_segmented_experiment(bucket, "full", processes=PROCESSES)
    write_segmented_experiment(bucket, "cut", processes=PROCESSES)
    bucket.delete(marker_key("cut", 1))
    assert cli(s3_env, "replay", s3_prefix_url).returncode == 1  # "cut" is not complete
    assert cli(s3_env, "recover", f"{s3_prefix_url}/raw/cut").returncode == 1
    bucket.put("aggregated/junk.json", b"{not a result", create=True)

    shown = cli(s3_env, "show", s3_prefix_url, "--json")
    assert shown.returncode == 1, shown.stderr  # a partial result, and an unreadable one
    out = as_json(shown)
    by_id = {r["experiment_id"]: r for r in out["results"]}
    assert set(by_id) == {"full", "cut"}
    assert by_id["full"]["partial"] is False and by_id["cut"]["partial"] is True
    assert by_id["full"]["path"] == f"{s3_prefix_url}/aggregated/full.json"
    # The figures are the result object's own: read it here and compare.
    result = orjson.loads(bucket.get("aggregated/full.json"))
    assert by_id["full"]["total_energy_j"] == result["total_energy_j"]
    assert by_id["full"]["total_tokens"] == result["total_tokens"]
    assert len(out["problems"]) == 1 and "junk.json" in out["problems"][0]

    one = cli(s3_env, "show", f"{s3_prefix_url}/aggregated/full.json")
    assert one.returncode == 0, one.stderr
    assert "full" in one.stdout and "total_energy_j" in one.stdout

    missing = cli(s3_env, "show", f"{s3_prefix_url}/aggregated/nothing.json")
    assert missing.returncode == 2 and "no such result object" in missing.stderr
    empty = cli(s3_env, "show", f"{s3_prefix_url}-empty")
    assert empty.returncode == 2 and "no result objects" in empty.stderr
