"""``watch --metrics-port 0``: the real daemon, scraped over HTTP, against the events written.

The daemon runs as its own process (``procs.Daemon``); the experiments are written with the
project's writer (``simulate`` and ``EventLogWriter``); the figures expected are computed here
from the events on disk (``helpers.live_truth``), not by the code under test.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from energy_ledger._version import __version__
from energy_ledger.simulate import simulate
from tests.daemon.procs import Daemon
from tests.helpers import RunningExperiment, child_env, live_truth, read_status, wait_for

REPO = Path(__file__).resolve().parents[2]
RUNNING = "run-live"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> tuple[str, Samples]:
    """The text of one scrape and its samples by name and labels (parsed by prometheus-client)."""
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    parsed = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    return text, parsed


def labels(**pairs: str) -> frozenset[tuple[str, str]]:
    return frozenset(pairs.items())


def live_of(status: dict[str, Any] | None, experiment_id: str) -> dict[str, Any] | None:
    """The status file's live row of one experiment."""
    rows = (status or {}).get("live") or []
    return next((r for r in rows if r["experiment_id"] == experiment_id), None)


@dataclass
class Scraped:
    """The root the module's daemon watches, and one scrape of it once it settled."""

    root: Path
    daemon: Daemon
    running: RunningExperiment
    text: str
    samples: Samples
    url: str


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scraped]:
    """One finished experiment and one running before the daemon starts, one finished after."""
    work = tmp_path_factory.mktemp("metrics")
    root = work / "root"
    (root / "raw").mkdir(parents=True)
    simulate(root, processes=2, requests=10, prefix="before")
    running = RunningExperiment(root, RUNNING)
    truth = live_truth(running.directory)
    daemon = Daemon(root, work / "daemon.log", ["--metrics-port", "0"], child_env())
    try:
        daemon.wait_ready()
        simulate(root, processes=2, requests=10, prefix="after", seed=1)

        def settled() -> dict[str, Any] | None:
            status = read_status(root) or {}
            row = live_of(status, RUNNING)
            ready = status.get("emitted") == 2 and row and row["requests"] == truth["requests"]
            return status if ready else None

        url = wait_for(settled, "both emissions and the running experiment's figures")[
            "metrics_url"
        ]
        text, samples = scrape(url)
        yield Scraped(root, daemon, running, text, samples, url)
    finally:
        daemon.close()
        running.abandon()


class TestScrape:
    """What a real scrape says, checked against what was written."""

    def test_url_is_in_the_status_file_and_the_log(self, scraped: Scraped) -> None:
        """Port 0 took a free port; the status file and the daemon's log both name it."""
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/metrics", scraped.url)
        assert f"serving metrics on {scraped.url}" in scraped.daemon.output

    def test_states_and_emissions(self, scraped: Scraped) -> None:
        """Two emitted, one pending, nothing else; two emissions by this daemon."""
        got = scraped.samples
        states = {s: got[("energy_ledger_experiments", labels(state=s))] for s in (
            "pending", "complete", "emitted", "failed", "invalid", "stale")}  # fmt: skip
        assert states == {"pending": 1, "complete": 0, "emitted": 2, "failed": 0,
                          "invalid": 0, "stale": 0}  # fmt: skip
        assert got[("energy_ledger_emissions_total", labels(kind="complete"))] == 2
        assert got[("energy_ledger_emissions_total", labels(kind="partial"))] == 0
        assert got[("energy_ledger_lease_held", labels(host=socket.gethostname()))] == 1
        assert got[("energy_ledger_build_info", labels(version=__version__))] == 1
        assert got[("energy_ledger_hook_runs_total", labels())] == 0

    def test_latency_only_for_what_completed_while_it_ran(self, scraped: Scraped) -> None:
        """The experiment finished before the start is not a latency; the later one is."""
        got = scraped.samples
        assert got[("energy_ledger_emission_latency_seconds_count", labels())] == 1
        assert 0 <= got[("energy_ledger_emission_latency_seconds_sum", labels())] < 30
        assert got[("energy_ledger_scan_duration_seconds_count", labels())] >= 3

    def test_bytes_and_events_read_once(self, scraped: Scraped) -> None:
        """Every log was read to its end exactly once: its bytes and lines, no more."""
        logs = sorted((scraped.root / "raw").glob("*/process_*.events.jsonl"))
        got = scraped.samples
        assert got[("energy_ledger_log_read_bytes_total", labels())] == sum(
            p.stat().st_size for p in logs
        )
        lines = sum(len(p.read_bytes().splitlines()) for p in logs)
        assert got[("energy_ledger_events_read_total", labels())] == lines

    def test_running_experiment_gauges(self, scraped: Scraped) -> None:
        """Requests, tokens, processes, energy and power per GPU equal the events' figures."""
        truth = live_truth(scraped.running.directory)
        got = scraped.samples
        eid = labels(experiment=RUNNING)
        assert got[("energy_ledger_experiment_requests", eid)] == truth["requests"]
        assert got[("energy_ledger_experiment_output_tokens", eid)] == truth["output_tokens"]
        assert got[("energy_ledger_experiment_processes_started", eid)] == truth["started"]
        assert got[("energy_ledger_experiment_processes_finished", eid)] == truth["finished"]
        assert got[("energy_ledger_experiment_processes_expected", eid)] == truth["expected"]
        assert got[("energy_ledger_experiment_processes_failed", eid)] == 0
        for gpu, energy_j in truth["energy_j"].items():
            key = labels(experiment=RUNNING, gpu=gpu)
            assert got[("energy_ledger_experiment_energy_joules", key)] == pytest.approx(energy_j)
            assert got[("energy_ledger_experiment_power_watts", key)] == truth["power_w"][gpu]
        live = {dict(k)["experiment"] for (_n, k) in got if "experiment" in dict(k)}
        assert live == {RUNNING}  # the emitted ones have no live series
        assert got[("energy_ledger_live_experiments_left_out", labels())] == 0

    def test_grafana_dashboard_names_exist(self, scraped: Scraped) -> None:
        """Every metric the shipped dashboard queries is in a real scrape; it is a dashboard."""
        dashboard = json.loads((REPO / "config" / "grafana-dashboard.json").read_text())
        assert 36 <= dashboard["schemaVersion"] <= 41
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
        exprs += [v["definition"] for v in variables.values() if v["type"] == "query"]
        referenced = {m for e in exprs for m in re.findall(r"\benergy_ledger_[a-z_]+", e)}
        exported = {name for name, _labels in scraped.samples}
        assert referenced and referenced <= exported, sorted(referenced - exported)
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids))
        for panel in dashboard["panels"]:
            if panel["type"] != "row":
                assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        kinds = {p["type"] for p in dashboard["panels"]}
        assert {"stat", "timeseries"} <= kinds

    def test_status_watch_reads_the_daemon(self, scraped: Scraped) -> None:
        """``status --watch --json`` takes the daemon's figures while it runs."""
        proc = subprocess.Popen(
            [sys.executable, "-m", "energy_ledger", "status", str(scraped.root), "--watch",
             "--json", "--interval", "0.1"],
            env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            view = json.loads(proc.stdout.readline())
        finally:
            proc.kill()
            proc.communicate(timeout=10)
        assert view["source"] == "daemon"
        (row,) = view["experiments"]
        truth = live_truth(scraped.running.directory)
        assert (row["experiment_id"], row["requests"]) == (RUNNING, truth["requests"])
        assert row["processes_finished"] == truth["finished"]


class TestSeriesEnd:
    """An experiment's series end when it leaves the active set."""

    def test_series_disappear_once_emitted(self, tmp_path: Path) -> None:
        """The running experiment finishes: it is emitted and its live series are gone."""
        (tmp_path / "raw").mkdir()
        running = RunningExperiment(tmp_path, RUNNING, processes=2, requests=4)
        daemon = Daemon(tmp_path, tmp_path / "daemon.log", ["--metrics-port", "0"], child_env())
        try:
            status = wait_for(
                lambda: (s := read_status(tmp_path)) and live_of(s, RUNNING) and s,
                "the running experiment's live figures",
            )
            url = status["metrics_url"]
            _text, got = scrape(url)
            assert got[("energy_ledger_experiment_requests", labels(experiment=RUNNING))] > 0
            running.finish()

            def gone() -> Samples | None:
                _text, now = scrape(url)
                left = [k for _n, k in now if ("experiment", RUNNING) in k]
                return None if left else now

            got = wait_for(gone, "the experiment's series to end")
            assert got[("energy_ledger_experiments", labels(state="emitted"))] == 1
            assert got[("energy_ledger_experiments", labels(state="pending"))] == 0
            assert got[("energy_ledger_emissions_total", labels(kind="complete"))] == 1
            assert (tmp_path / "aggregated" / f"{RUNNING}.json").exists()
        finally:
            daemon.close()
            running.abandon()
