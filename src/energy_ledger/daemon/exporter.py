"""``watch --metrics-port``: ``/metrics`` in Prometheus's text format (docs/watcher.md, "Metrics").

The only module that imports prometheus-client (the ``metrics`` extra), and only a daemon
started with a metrics port imports it. A custom collector on a registry of its own (never the
library's global one, so no process or platform collector is mixed in) renders the latest
``daemon.metrics.MetricsSnapshot`` at each scrape. It yields only the experiments the snapshot
holds, so an experiment's series disappear at the first scrape after it leaves the active set,
and their number is capped (``core.live.MAX_LIVE_EXPERIMENTS``). A small threading HTTP server
(the standard library's, as prometheus-client's own is) serves it on daemon threads apart from
the loop, rendering each snapshot once however often it is scraped.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder

from energy_ledger.daemon.metrics import HistogramValue, MetricsSnapshot, SnapshotBox
from energy_ledger.exceptions import ConfigError

__all__ = ["MetricsServer", "SnapshotCollector", "start_exporter"]

logger = logging.getLogger(__name__)

PREFIX = "energy_ledger_"
CLIENT_TIMEOUT_SEC = 10.0
"""A scraper's connection that sends nothing for this long is closed."""


def _buckets(value: HistogramValue) -> list[tuple[str, float]]:
    bounds = [repr(float(b)) for b in value.bounds] + ["+Inf"]
    return list(zip(bounds, map(float, value.cumulative), strict=True))


class SnapshotCollector:
    """Renders the latest snapshot of a ``SnapshotBox`` as metric families, at each scrape."""

    def __init__(self, box: SnapshotBox) -> None:
        self.box = box

    def collect(self) -> Iterator[Metric]:
        """The metric families of the latest snapshot (none before the loop published one)."""
        snap = self.box.latest()
        if snap is None:
            return
        yield from self._daemon(snap)
        yield from self._live(snap)

    def _daemon(self, snap: MetricsSnapshot) -> Iterator[Metric]:
        yield InfoMetricFamily(
            PREFIX + "build", "The energy-ledger version running.", value={"version": snap.version}
        )
        yield GaugeMetricFamily(
            PREFIX + "daemon_start_time_seconds",
            "When this daemon started, in Unix seconds.",
            value=snap.started_t,
        )
        # A folder daemon holds the root's lease; one on a bucket holds claims instead.
        name, doc, amount = (
            ("lease_held", "1 while this daemon holds the root's lease.", float(snap.lease_held))
            if snap.claims_held is None
            else (
                "claims_held",
                "Claims on experiments this daemon holds (a bucket root).",
                float(snap.claims_held),
            )
        )
        held = GaugeMetricFamily(PREFIX + name, doc, labels=["host"])
        held.add_metric([snap.host], amount)
        yield held
        yield GaugeMetricFamily(
            PREFIX + "lag_seconds",
            "Age of the oldest change not yet processed, or the last change's processing delay.",
            value=snap.lag_sec,
        )
        states = GaugeMetricFamily(
            PREFIX + "experiments",
            "Experiments by state, each counted once (stale ones as stale).",
            labels=["state"],
        )
        for state, n in snap.states:
            states.add_metric([state], n)
        yield states
        emissions = CounterMetricFamily(
            PREFIX + "emissions",
            "Results this daemon emitted (recorded) since it started, by kind.",
            labels=["kind"],
        )
        for kind, n in snap.emissions:
            emissions.add_metric([kind], n)
        yield emissions
        yield CounterMetricFamily(
            PREFIX + "hook_runs", "--on-emit attempts this daemon started.", value=snap.hook_runs
        )
        yield CounterMetricFamily(
            PREFIX + "hook_failures",
            "--on-emit attempts that failed (non-zero exit, timeout).",
            value=snap.hook_failures,
        )
        yield CounterMetricFamily(
            PREFIX + "log_read_bytes", "Bytes of event logs read.", value=snap.read_bytes
        )
        yield CounterMetricFamily(
            PREFIX + "events_read", "Events folded from the logs read.", value=snap.read_events
        )
        yield HistogramMetricFamily(
            PREFIX + "emission_latency_seconds",
            "From the experiment's last marker (its mtime) to its result written by this daemon.",
            buckets=_buckets(snap.emission_latency),
            sum_value=snap.emission_latency.sum,
        )
        yield HistogramMetricFamily(
            PREFIX + "scan_duration_seconds",
            "One experiment's scan: its appended bytes read and checked (and its result written).",
            buckets=_buckets(snap.scan_duration),
            sum_value=snap.scan_duration.sum,
        )
        sweeps = HistogramMetricFamily(
            PREFIX + "sweep_duration_seconds",
            "One pass over the active experiments (kind=active) or over all of raw/ (reconcile).",
            labels=["kind"],
        )
        for kind, value in snap.sweep_duration:
            sweeps.add_metric([kind], _buckets(value), value.sum)
        yield sweeps

    def _live(self, snap: MetricsSnapshot) -> Iterator[Metric]:
        def gauge(name: str, doc: str, *labels: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(PREFIX + name, doc, labels=["experiment", *labels])

        energy = gauge("experiment_energy_joules", "Energy so far (docs/metrics.md).", "gpu")
        power = gauge("experiment_power_watts", "Latest power reading in the window.", "gpu")
        requests = gauge("experiment_requests", "Requests so far, inside the window.")
        tokens = gauge("experiment_output_tokens", "Output tokens so far, inside the window.")
        expected = gauge("experiment_processes_expected", "Processes declared (world size).")
        started = gauge("experiment_processes_started", "Processes whose log has started.")
        finished = gauge("experiment_processes_finished", "Processes that logged their end.")
        failed = gauge("experiment_processes_failed", "Processes that logged a failure.")
        for live in snap.live:
            eid = [live.experiment_id]
            for gpu in live.gpus:
                if gpu.energy_j is not None:
                    energy.add_metric([*eid, gpu.gpu], gpu.energy_j)
                if gpu.power_w is not None:
                    power.add_metric([*eid, gpu.gpu], gpu.power_w)
            requests.add_metric(eid, live.requests)
            tokens.add_metric(eid, live.output_tokens)
            if live.processes_expected is not None:
                expected.add_metric(eid, live.processes_expected)
            started.add_metric(eid, live.processes_started)
            finished.add_metric(eid, live.processes_finished)
            failed.add_metric(eid, live.processes_failed)
        yield from (energy, power, requests, tokens, expected, started, finished, failed)
        yield GaugeMetricFamily(
            PREFIX + "live_experiments_left_out",
            "Active experiments without live series (over the cap of the most recently active).",
            value=snap.live_left_out,
        )


class _Handler(BaseHTTPRequestHandler):
    """``GET /metrics``: the latest snapshot in the format the scraper asks for."""

    server: _Server
    timeout = CLIENT_TIMEOUT_SEC

    def do_GET(self) -> None:
        """Answer a scrape (``/metrics``, or ``/``); anything else is 404."""
        if urlsplit(self.path).path not in ("/metrics", "/"):
            self.send_error(404, "only /metrics is served here")
            return
        body, content_type = self.server.render(self.headers.get("Accept", ""))
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Requests are not logged: a line per scrape would drown the daemon's log."""


class _Server(ThreadingHTTPServer):
    """Renders each published snapshot once, whatever the number of scrapes of it."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], registry: CollectorRegistry, box: SnapshotBox):
        self.address_family = socket.getaddrinfo(
            address[0], address[1], type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0][0]
        super().__init__(address, _Handler)
        self.registry = registry
        self.box = box
        self._lock = threading.Lock()
        self._cached: tuple[object, str, bytes] | None = None

    def render(self, accept: str) -> tuple[bytes, str]:
        """The body and content type of a scrape (text format, or OpenMetrics if asked)."""
        encoder, content_type = choose_encoder(accept)
        snapshot = self.box.latest()
        with self._lock:
            cached = self._cached
            if cached is not None and cached[0] is snapshot and cached[1] == content_type:
                return cached[2], content_type
        body: bytes = encoder(self.registry)
        with self._lock:
            self._cached = (snapshot, content_type, body)
        return body, content_type


class MetricsServer:
    """The HTTP server of ``/metrics``, on a daemon thread; ``close()`` stops it."""

    def __init__(self, httpd: _Server, url: str) -> None:
        self._httpd = httpd
        self.url = url
        self.port: int = httpd.server_address[1]
        self._thread = threading.Thread(
            target=httpd.serve_forever, name="metrics-server", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop serving and free the port."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=2.0)


def start_exporter(box: SnapshotBox, host: str, port: int) -> MetricsServer:
    """Serve ``box``'s snapshots on ``http://host:port/metrics``; set ``box.url``; log it.

    Raises:
        ConfigError: the address cannot be listened on (the port is in use, the host is not
            an address of this machine); the message names both.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(box))
    try:
        httpd = _Server((host, port), registry, box)
    except OSError as exc:
        where = f"metrics_port {port} on metrics_host {host}"
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"cannot serve metrics: {where}: the port is already in use (choose another "
                "--metrics-port, or 0 for any free one)"
            ) from exc
        raise ConfigError(f"cannot serve metrics on {where}: {exc.strerror or exc}") from exc
    shown = f"[{host}]" if ":" in host else host
    server = MetricsServer(httpd, f"http://{shown}:{httpd.server_address[1]}/metrics")
    box.url = server.url
    logger.info("serving metrics on %s", server.url)
    return server
