"""Section 9 of the benchmark: object storage, on a real S3 server (SeaweedFS ``weed mini``).

- List cost: a bucket root of N experiments (10,000 full, 1,000 quick, 100 smoke), each one
  object ``raw/<id>/process_0.done``, written on 16 threads (timed, no target), then
  ``open_objects(url).list("raw/")`` timed (median of 3): seconds and keys per second.
- Replay throughput: one 4-process experiment (about 200k events full, 20k quick, a few
  hundred smoke) written as segments (``tests.helpers.write_segmented_experiment``) into the
  bucket and, with the same function, into a local folder; ``replay_root(url, force=True)``
  against ``replay_root(folder, force=True)``, interleaved, medians of 3, and their ratio; then
  ``replay_root(url)`` unforced, which the sources object lets skip the unchanged experiment.

- Marker-to-result latency: one ``energy-ledger watch s3://...`` daemon with 1 s polling, on
  a bucket that already holds 100 emitted experiments; one-process experiments are written one
  after another (segments first, then, after a random pause of 1.2-2.2 polls, the
  marker), and the time from the marker's put
  returning to the result's first ``head`` is taken for each (30 full, 10 quick, 3 smoke):
  p50 and p99, target p99 <= 2 s (one poll interval, plus one second for the poll's listing,
  the reads and the writes). Then the requests and time of one full and one idle poll of that
  root (``BucketWatcher.poll`` in the bench's process), with every experiment emitted.

The server is the tests' own ``tests.s3.server.SeaweedServer`` and the segments come from the
tests' own writer, so the bench measures exactly what the S3 tests exercise. ``tests`` is a
package of the repository, not of the installed project, and ``python scripts/bench.py`` puts
only ``scripts/`` on ``sys.path``: the repository root is inserted below so that ``tests`` can
be imported. Without ``weed`` (or when it does not start) the section is one "skipped" row.
No timing is asserted.
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench_parallel import rounds
from bench_report import Report, Sizes, percentile, verdict

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SECTION = "9 object storage"
PUT_THREADS = 16
REPS = 3
LIST_EXPERIMENTS = {"full": 10_000, "quick": 1_000, "smoke": 100}
REPLAY_REQUESTS = {"full": 40_000, "quick": 4_000, "smoke": 60}
"""Requests per process of the replayed experiment (4 processes): a request brings 1.25 events
(a sample every 4th), so 40,000 make about 200k events."""


def segmented_events(processes: int, requests: int) -> int:
    """Events ``write_segmented_experiment`` writes: per process, started, window start and end,
    the requests and a sample every 4th request."""
    return processes * (3 + requests + (requests + 3) // 4)


@contextmanager
def _environ(env: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _median(run: Callable[[], object], reps: int = REPS) -> float:
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def bench_s3(report: Report, sizes: Sizes, work: Path) -> None:
    """Section 9: list cost of a many-experiment bucket, and replay from a bucket vs a folder."""
    from tests.s3.server import SeaweedServer, WeedUnavailable, new_bucket_name

    try:
        server = SeaweedServer()
        server.start()
    except WeedUnavailable as exc:
        reason = str(exc).splitlines()[0] if str(exc) else "weed unavailable"
        print(f"bench: object storage skipped: {reason}", file=sys.stderr)
        report.add(SECTION, "S3 (SeaweedFS weed mini)", f"skipped: {reason}")
        return
    try:
        with _environ(server.env):
            _bench_list(report, sizes, server, new_bucket_name())
            _bench_replay(report, sizes, server, new_bucket_name(), work)
            _bench_latency(report, sizes, server, new_bucket_name(), work)
    finally:
        server.stop()


def _bench_list(report: Report, sizes: Sizes, server: Any, bucket: str) -> None:
    from energy_ledger.store.objects import open_objects

    server.create_bucket(bucket)
    url = f"s3://{bucket}"
    n = LIST_EXPERIMENTS[sizes.name]
    objects = open_objects(url)
    keys = [f"raw/exp-{i:05d}/process_0.done" for i in range(n)]
    started = time.perf_counter()
    with ThreadPoolExecutor(PUT_THREADS) as pool:
        list(pool.map(lambda key: objects.put(key, b"{}\n"), keys))
    write_sec = time.perf_counter() - started
    report.add(SECTION, f"write {n:,} marker objects, {PUT_THREADS} threads",
               f"{write_sec:.2f} s ({n / write_sec:,.0f} puts/s)",
               figures={"objects": n, "sec": write_sec})  # fmt: skip
    listed: list[int] = []
    sec = _median(lambda: listed.append(len(open_objects(url).list("raw/"))))
    if listed[-1] != n:
        raise RuntimeError(f"listed {listed[-1]} keys, wrote {n}")
    report.add(SECTION, f"list raw/ of {n:,} experiments (open_objects(url).list)",
               f"{sec:.3f} s median, {n / sec:,.0f} keys/s",
               figures={"keys": n, "median_sec": sec})  # fmt: skip


def _bench_replay(report: Report, sizes: Sizes, server: Any, bucket: str, work: Path) -> None:
    from tests.helpers import write_segmented_experiment

    from energy_ledger.pipeline import replay_root
    from energy_ledger.store.objects import LocalObjects, open_objects

    server.create_bucket(bucket)
    url = f"s3://{bucket}"
    folder = work / "s3-folder"
    folder.mkdir()
    processes, requests = 4, REPLAY_REQUESTS[sizes.name]
    events = segmented_events(processes, requests)
    started = time.perf_counter()
    write_segmented_experiment(open_objects(url), "seg-0000", processes=processes,
                               requests=requests)  # fmt: skip
    bucket_write = time.perf_counter() - started
    write_segmented_experiment(LocalObjects(folder), "seg-0000", processes=processes,
                               requests=requests)  # fmt: skip
    segments = sum(1 for info in open_objects(url).list("raw/") if "segment" in info.key)
    report.add(SECTION, f"write 1 experiment, {processes} processes, ~{events:,} events, "
               f"{segments:,} segments, to the bucket (serial)", f"{bucket_write:.2f} s",
               figures={"events": events, "objects": segments, "sec": bucket_write})  # fmt: skip
    for outcome in replay_root(url, force=True) + replay_root(folder, force=True):
        if outcome.action not in ("written", "up-to-date", "kept"):
            raise RuntimeError(f"replay of {outcome.experiment_id}: {outcome.action} "
                               f"{outcome.detail}")  # fmt: skip
    median = rounds(
        {
            "bucket": lambda: replay_root(url, force=True),
            "folder": lambda: replay_root(folder, force=True),
        },
        REPS,
    )
    b, f = median["bucket"], median["folder"]
    report.add(SECTION, f"replay it from the bucket, force ({events:,} events)",
               f"{b:.2f} s median, {events / b:,.0f} events/s",
               figures={"events": events, "median_sec": b})  # fmt: skip
    report.add(SECTION, "same, from a folder of the same segments",
               f"{f:.2f} s median, {events / f:,.0f} events/s",
               figures={"events": events, "median_sec": f})  # fmt: skip
    report.add(SECTION, "bucket / folder replay time", f"{b / f:.2f}x",
               figures={"ratio": b / f})  # fmt: skip
    unchanged = _median(lambda: replay_root(url))
    report.add(SECTION, "replay the bucket again, unchanged (its sources object: no segment read)",
               f"{unchanged * 1000:.0f} ms median", figures={"median_sec": unchanged})  # fmt: skip


LATENCY_EXPERIMENTS = {"full": 30, "quick": 10, "smoke": 3}
LATENCY_BACKGROUND = 100
LATENCY_POLL_SEC = 1.0
LATENCY_TARGET_P99_SEC = 2.0


def _bench_latency(report: Report, sizes: Sizes, server: Any, bucket: str, work: Path) -> None:
    import subprocess

    from tests.helpers import write_segmented_experiment

    from energy_ledger.store.objects import open_objects
    from energy_ledger.store.segments import marker_key

    server.create_bucket(bucket)
    url = f"s3://{bucket}/root"
    objects = open_objects(url)
    for n in range(LATENCY_BACKGROUND):
        write_segmented_experiment(objects, f"old-{n:04d}", processes=1, requests=20)
    log = work / "latency-daemon.log"
    with log.open("wb") as fh:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "energy_ledger", "watch", url,
             "--poll-interval", str(LATENCY_POLL_SEC)],
            env={**os.environ, **server.env}, stdout=fh, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        _wait_for(lambda: len(objects.list("emissions/")) >= LATENCY_BACKGROUND, 120, log)
        latencies = []
        rng = random.Random(9)
        for n in range(LATENCY_EXPERIMENTS[sizes.name]):
            experiment_id = f"new-{n:04d}"
            write_segmented_experiment(objects, experiment_id, processes=1, requests=20)
            key = marker_key(experiment_id, 0)
            marker = objects.get(key)
            objects.delete(key)
            # The daemon claims it and reads its segments; a random pause puts the marker
            # at a random phase of the daemon's polls.
            time.sleep(LATENCY_POLL_SEC * (1.2 + rng.random()))
            objects.put(key, marker, create=True)
            started = time.perf_counter()
            result = f"aggregated/{experiment_id}.json"
            _wait_for(lambda key=result: objects.head(key), 30, log)
            latencies.append(time.perf_counter() - started)
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
    _bench_poll(report, objects, len(latencies) + LATENCY_BACKGROUND)
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    report.add(SECTION, f"marker -> result latency, watch s3:// with {LATENCY_POLL_SEC:g} s "
               f"polling, {len(latencies)} experiments beside {LATENCY_BACKGROUND} emitted",
               f"p50 {p50:.2f} s, p99 {p99:.2f} s", f"p99 <= {LATENCY_TARGET_P99_SEC:g} s",
               verdict(p99 <= LATENCY_TARGET_P99_SEC),
               figures={"p50_sec": p50, "p99_sec": p99, "n": len(latencies)})  # fmt: skip


def _wait_for(what: Callable[[], object], timeout_sec: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_sec
    while not what():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the daemon did not emit in {timeout_sec} s: {log.read_text()}")
        time.sleep(0.01)


class _Counted:
    """An ``ObjectStore`` that counts the calls made to it, by method."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()

    @property
    def url(self) -> str:
        return str(self.inner.url)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return method(*args, **kwargs)

        return counted


def _bench_poll(report: Report, objects: Any, experiments: int) -> None:
    """The requests and time of one full and one idle poll of a root whose experiments are all
    emitted (``BucketWatcher.poll`` in this process)."""
    import threading

    from tests.helpers import write_segmented_experiment

    from energy_ledger.daemon.bucket_watcher import BucketWatcher
    from energy_ledger.daemon.config import WatchConfig
    from energy_ledger.store.segments import marker_key, segments_prefix

    counted = _Counted(objects)
    watcher = BucketWatcher(counted, WatchConfig(), threading.Event())

    def poll(what: str) -> None:
        counted.calls.clear()
        started = time.perf_counter()
        watcher.poll()
        sec = time.perf_counter() - started
        calls = ", ".join(f"{n} {name}" for name, n in sorted(counted.calls.items()))
        report.add(SECTION, what,
                   f"{sec * 1000:.0f} ms, {sum(counted.calls.values())} requests ({calls})",
                   figures={"sec": sec, "requests": dict(counted.calls)})  # fmt: skip

    poll(f"one full poll (lists emissions/ too) of a root of {experiments} emitted experiments")
    poll(f"one idle poll of that root ({experiments} emitted experiments)")
    # A running experiment: its last segment and its marker not written yet.
    write_segmented_experiment(objects, "running", processes=1, requests=200)
    last = objects.list(segments_prefix("running", 0))[-1]
    held_back = objects.get(last.key), objects.get(marker_key("running", 0))
    objects.delete(last.key)
    objects.delete(marker_key("running", 0))
    watcher.poll()  # claims it, reads its segments
    objects.put(last.key, held_back[0], create=True)
    poll("one poll after a new segment of an experiment the daemon holds")
    objects.put(marker_key("running", 0), held_back[1], create=True)
    poll("one poll after its marker: the result and the emission record written")
