"""What ``/metrics`` shows (``daemon.metrics``) and how it is served (``daemon.exporter``)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from energy_ledger.cli import cli
from energy_ledger.core.live import MAX_LIVE_EXPERIMENTS
from energy_ledger.core.state import ProcessState
from energy_ledger.daemon.active import STATES, Tracked, state_counts
from energy_ledger.daemon.config import WatchConfig
from energy_ledger.daemon.exporter import SnapshotCollector, start_exporter
from energy_ledger.daemon.metrics import (
    INSTALL_HINT,
    Histogram,
    LoopCounters,
    SnapshotBox,
)
from energy_ledger.daemon.watcher import Watcher
from energy_ledger.exceptions import ConfigError
from energy_ledger.store.tail import LogTail
from energy_ledger.store.writer import EventLogWriter
from tests.helpers import child_env, ticking_clock


def samples(collector: SnapshotCollector) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample the collector yields now, by name and labels."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in collector.collect()
        for s in family.samples
    }


def watcher_with(tmp_path: Path, active: dict[str, Tracked]) -> tuple[Watcher, SnapshotBox]:
    """A watcher (not started) holding ``active``, publishing into a box."""
    (tmp_path / "raw").mkdir(exist_ok=True)
    box = SnapshotBox()
    watcher = Watcher(tmp_path, WatchConfig(), threading.Event(), metrics=box)
    watcher.active.update(active)
    return watcher, box


def tracked(tmp_path: Path, activity_t: float, requests: int) -> Tracked:
    """An active experiment whose one log has folded ``requests`` requests."""
    tail = LogTail(tmp_path / "unused.events.jsonl")
    tail.cursor.state = ProcessState(requests=requests, output_tokens=2 * requests)
    return Tracked(tails={0: tail}, state="pending", last_activity_t=activity_t)


class TestHistogram:
    """The loop's histograms count like Prometheus's (``le`` buckets, cumulative)."""

    def test_buckets(self) -> None:
        """A value on a bound is in that bucket; the last bucket is +Inf; the sum adds up."""
        h = Histogram((1.0, 2.0))
        for value in (0.5, 1.0, 1.5, 7.0):
            h.observe(value)
        value = h.value()
        assert value.cumulative == (2, 3, 4)
        assert value.count == 4 and value.sum == 10.0


class TestReadCounters:
    """Bytes and events read are counted from the cursors' progress, never twice."""

    def test_counts_what_each_refresh_read(self, tmp_path: Path) -> None:
        """Two reads of a growing log count its size once; a replaced log counts again."""
        log = tmp_path / "raw" / "e" / "process_0.events.jsonl"
        writer = EventLogWriter.open(tmp_path, "e", 0, clock=ticking_clock(1000.0))
        writer.append("process_started", experiment_id="e", run_id="r", process_index=0,
                      world_size=1, gpu_id=0)  # fmt: skip
        writer.flush()
        counters, tails = LoopCounters(), {0: LogTail(log)}
        for _ in range(2):
            mark = counters.mark(tails)
            tails[0].refresh()
            counters.scanned(tails, mark, 0.001)
            writer.append("warning", message="more bytes")
            writer.flush()
        assert (counters.read_bytes, counters.read_events) == (tails[0].cursor.offset, 2)
        writer.abandon()
        before = counters.read_bytes
        os.unlink(log)
        replaced = EventLogWriter.open(tmp_path, "e", 0, clock=ticking_clock(2000.0))
        replaced.append("process_started", experiment_id="e", run_id="r2", process_index=0,
                        world_size=1, gpu_id=0)  # fmt: skip
        replaced.close()
        mark = counters.mark(tails)
        tails[0].refresh()
        counters.scanned(tails, mark, 0.001)
        assert counters.read_bytes - before == log.stat().st_size
        assert counters.scan_duration.value().count == 3


class TestStateCounts:
    """Experiments by state: each counted once, stale ones as stale."""

    def test_counts(self) -> None:
        """Every state is present; ``new`` counts as pending; stale wins over the state."""
        rows = [
            {"state": "pending", "stale": False},
            {"state": "new", "stale": False},
            {"state": "failed", "stale": False},
            {"state": "pending", "stale": True},
            {"state": "complete", "stale": False},
        ]
        counts = state_counts(rows, emitted=7)
        assert tuple(counts) == STATES
        assert counts == {"pending": 2, "complete": 1, "emitted": 7, "failed": 1,
                          "invalid": 0, "stale": 1}  # fmt: skip


class TestCollector:
    """The collector renders the latest snapshot: current active experiments only, capped."""

    def test_cap_and_left_out(self, tmp_path: Path) -> None:
        """Of 105 active experiments the 100 most recently active get series; 5 are counted."""
        extra = 5
        active = {
            f"e{i:03d}": tracked(tmp_path, float(i), i) for i in range(MAX_LIVE_EXPERIMENTS + extra)
        }
        watcher, box = watcher_with(tmp_path, active)
        watcher._write_status(force=True)
        got = samples(SnapshotCollector(box))
        shown = {
            dict(labels)["experiment"]
            for (name, labels), _ in got.items()
            if name == "energy_ledger_experiment_requests"
        }
        assert shown == {f"e{i:03d}" for i in range(extra, MAX_LIVE_EXPERIMENTS + extra)}
        assert got[("energy_ledger_live_experiments_left_out", frozenset())] == extra
        requests = ("energy_ledger_experiment_requests", frozenset({("experiment", "e104")}))
        assert got[requests] == 104
        assert got[("energy_ledger_experiments", frozenset({("state", "pending")}))] == 105

    def test_series_end_with_the_experiment(self, tmp_path: Path) -> None:
        """An experiment that leaves the active set has no series at the next snapshot."""
        watcher, box = watcher_with(tmp_path, {"gone": tracked(tmp_path, 1.0, 3)})
        collector = SnapshotCollector(box)
        watcher._write_status(force=True)
        assert any(dict(k[1]).get("experiment") == "gone" for k in samples(collector))
        del watcher.active["gone"]
        watcher._write_status(force=True)
        assert not any(dict(k[1]).get("experiment") == "gone" for k in samples(collector))

    def test_nothing_before_the_first_snapshot(self) -> None:
        """A scrape before the loop published anything is empty, not an error."""
        assert list(SnapshotCollector(SnapshotBox()).collect()) == []


class TestServer:
    """The HTTP server: any free port, its URL known, a port in use refused clearly."""

    def test_port_zero_serves_the_snapshot(self, tmp_path: Path) -> None:
        """Port 0 binds a free port; the box knows the URL; a scrape parses."""
        watcher, box = watcher_with(tmp_path, {"e": tracked(tmp_path, 1.0, 4)})
        server = start_exporter(box, "127.0.0.1", 0)
        try:
            watcher._write_status(force=True)
            assert box.url == f"http://127.0.0.1:{server.port}/metrics" and server.port > 0
            text = urllib.request.urlopen(box.url, timeout=5).read().decode()
        finally:
            server.close()
        names = {f.name for f in text_string_to_metric_families(text)}
        assert {"energy_ledger_experiments", "energy_ledger_emissions"} <= names

    def test_other_paths_and_openmetrics(self, tmp_path: Path) -> None:
        """Only /metrics is served; a scraper that asks for OpenMetrics gets it."""
        watcher, box = watcher_with(tmp_path, {})
        server = start_exporter(box, "127.0.0.1", 0)
        try:
            watcher._write_status(force=True)
            with pytest.raises(urllib.error.HTTPError) as missing:
                urllib.request.urlopen(box.url.replace("/metrics", "/nope"), timeout=5)
            missing.value.close()
            assert missing.value.code == 404
            ask = urllib.request.Request(
                str(box.url), headers={"Accept": "application/openmetrics-text; version=1.0.0"}
            )
            with urllib.request.urlopen(ask, timeout=5) as response:
                kind, body = response.headers["Content-Type"], response.read().decode()
        finally:
            server.close()
        assert kind.startswith("application/openmetrics-text") and body.endswith("# EOF\n")

    def test_an_equal_snapshot_is_not_replaced(self, tmp_path: Path) -> None:
        """An idle loop republishes the same figures: the box keeps the first (and a scrape
        can reuse its rendering); a change replaces it."""
        watcher, box = watcher_with(tmp_path, {})
        watcher._write_status(force=True)
        first = box.latest()
        watcher._write_status(force=True)
        assert box.latest() is first
        watcher.counters.read_bytes += 1
        watcher._write_status(force=True)
        assert box.latest() is not first

    def test_port_in_use(self) -> None:
        """A port another socket listens on is a ConfigError naming the port."""
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            with pytest.raises(ConfigError, match=f"metrics_port {port}.*already in use"):
                start_exporter(SnapshotBox(), "127.0.0.1", port)

    def test_port_in_use_exits_2(self, tmp_path: Path) -> None:
        """``watch --metrics-port`` on a busy port exits 2 with a message, no traceback."""
        (tmp_path / "raw").mkdir()
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            proc = subprocess.run(
                [sys.executable, "-m", "energy_ledger", "watch", str(tmp_path),
                 "--metrics-port", str(port)],
                env=child_env(), capture_output=True, text=True, timeout=30,
            )  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        assert "already in use" in proc.stderr and "Traceback" not in proc.stderr
        assert not (tmp_path / ".energy-ledger").exists()


@pytest.mark.usefixtures("restore_logging")
class TestMissingExtra:
    """Without prometheus-client, asking for metrics says what to install (exit 2)."""

    def test_cli_names_the_extra(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The check runs before anything starts; the message has the pip command."""
        monkeypatch.setattr("energy_ledger.daemon.metrics.metrics_library_missing", lambda: True)
        (tmp_path / "raw").mkdir()
        assert cli("watch", str(tmp_path), "--metrics-port", "0") == 2
        err = capsys.readouterr().err
        assert INSTALL_HINT in err and "prometheus-client" in err and "Traceback" not in err
        assert not (tmp_path / ".energy-ledger").exists()

    def test_without_a_port_nothing_is_checked(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A daemon without metrics does not need the extra."""
        monkeypatch.setattr("energy_ledger.daemon.metrics.metrics_library_missing", lambda: True)
        calls: list[WatchConfig] = []
        monkeypatch.setattr(
            "energy_ledger.daemon.run.run_watch", lambda root, config: calls.append(config) or 0
        )
        assert cli("watch", str(tmp_path)) == 0
        assert calls and calls[0].metrics_port is None
