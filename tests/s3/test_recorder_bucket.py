"""Real recorder processes write an experiment into a bucket on SeaweedFS (issue 13).

Two ranks run ``ProcessRecorder.from_env`` with the fake NVML and ``root=s3://...``, each in
its own interpreter with the server's client environment; the test then reads the bucket back
with ``store.segments`` alone: every process's segments, its version-2 marker, and as many
events as the rank said it wrote.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from energy_ledger.core.completeness import check_completeness
from energy_ledger.core.marker import SegmentedMarker, parse_any_marker
from energy_ledger.store.layout import experiment_key
from energy_ledger.store.objects import open_objects
from energy_ledger.store.segment_tail import SegmentTail, segment_evidence
from energy_ledger.store.segments import marker_key, segments_prefix
from tests.helpers import child_env
from tests.s3.server import SeaweedServer

EXP = "bucket-exp"
WORLD_SIZE = 2
REQUESTS = 400

WORKER = """
import sys
from energy_ledger.recorder.recorder import ProcessRecorder

root, experiment_id, requests = sys.argv[1], sys.argv[2], int(sys.argv[3])
rec = ProcessRecorder.from_env(
    root, experiment_id, sample_hz=20.0, snapshot_packages=False,
    writer_options={"segment_events": 64},
)
with rec, rec.window():
    for i in range(requests):
        rec.request(latency_ms=10.0, input_tokens=5, output_tokens=7, ttft_ms=2.0)
marker = rec.marker
print(type(marker).__name__, marker.final_seq + 1, len(marker.segments), rec.write_error)
"""


def test_two_ranks_write_segments_and_markers(
    tmp_path: Path, s3_server: SeaweedServer, s3_url: str
) -> None:
    """Both ranks finish with a version-2 marker; reading the bucket back finds each rank's
    segments, a marker that matches them, and the events the rank counted."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = child_env(
        ENERGY_LEDGER_NVML="fake",
        ENERGY_LEDGER_RUN_ID="bucket-run",
        WORLD_SIZE=str(WORLD_SIZE),
        **s3_server.env,
    )
    env.pop("CUDA_VISIBLE_DEVICES", None)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), s3_url, EXP, str(REQUESTS)],
            env=env | {"RANK": str(rank), "LOCAL_RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(WORLD_SIZE)
    ]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    written = []
    for out, _ in outputs:
        kind, events, segments, error = out.split()
        assert (kind, error) == ("SegmentedMarker", "None")
        written.append((int(events), int(segments)))

    objects = open_objects(s3_url)
    listing = objects.list(experiment_key(EXP))
    evidence = []
    for index, (events, segments) in enumerate(written):
        tail = SegmentTail(segments_prefix(EXP, index))
        tail.refresh(objects, listing)
        marker = parse_any_marker(objects.get(marker_key(EXP, index)))
        assert isinstance(marker, SegmentedMarker)
        assert tail.error is None and tail.unread is None
        assert len(marker.segments) == segments == len(tail.present) > 2
        assert tail.read == list(marker.segments)
        assert tail.cursor.lines == events == marker.final_seq + 1
        state = tail.cursor.state
        assert state.finished and state.requests == REQUESTS
        assert state.clocks and all(clock[3] is None for clock in state.clocks)  # no fs offset
        evidence.append(segment_evidence(tail, index, marker, None))
    report = check_completeness(EXP, evidence)
    assert report.is_complete, report.reasons
    assert not any(info.key.endswith(".events.jsonl") for info in listing)
