"""Hand-built event logs for the definition tests: raw JSONL lines, replayed by the real core.

Every figure a test expects is worked out in the test from the values given here, never by
calling the code under test.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from energy_ledger.core.process import ProcessSummary, summarize_process
from energy_ledger.core.replay import replay_bytes

EXPERIMENT = "exp-def"


@dataclass(frozen=True)
class Req:
    """One ``request`` event: end-to-end latency, tokens, and optional TTFT and ITL list."""

    latency_ms: float
    input_tokens: int = 1
    output_tokens: int = 1
    ttft_ms: float | None = None
    itl_ms: Sequence[float] | None = None

    def body(self) -> dict[str, Any]:
        """The event's fields."""
        body: dict[str, Any] = {
            "type": "request",
            "latency_ms": self.latency_ms,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
        }
        if self.ttft_ms is not None:
            body["ttft_ms"] = self.ttft_ms
        if self.itl_ms is not None:
            body["itl_ms"] = list(self.itl_ms)
        return body


def ledger(
    index: int,
    requests: Sequence[Req],
    *,
    world_size: int = 1,
    window: tuple[float, float] = (10.0, 14.0),
    counter_mj: tuple[float, float] = (0.0, 400_000.0),
    warmup: dict[str, Any] | None = None,
    compute: dict[str, Any] | None = None,
) -> bytes:
    """A finished process log: start, optional warm-up, window with requests, optional compute."""
    start_t, end_t = window
    bodies: list[tuple[float, dict[str, Any]]] = [
        (
            start_t - 2.0,
            {
                "type": "process_started",
                "experiment_id": EXPERIMENT,
                "run_id": "run-def",
                "process_index": index,
                "world_size": world_size,
                "gpu_id": index,
                "gpu_uuid": f"GPU-{index}",
                "hostname": "node-a",
            },
        )
    ]
    if warmup is not None:
        bodies.append((start_t - 1.0, {"type": "warmup", **warmup}))
    bodies.append((start_t, {"type": "window_started", "energy_mj": counter_mj[0]}))
    bodies.extend((start_t + 0.5, r.body()) for r in requests)
    bodies.append((end_t, {"type": "window_ended", "energy_mj": counter_mj[1]}))
    if compute is not None:
        bodies.append((end_t, {"type": "compute", **compute}))
    bodies.append((end_t, {"type": "process_finished"}))
    lines = [
        orjson.dumps({"v": 1, "seq": seq, "t": t, **body}) for seq, (t, body) in enumerate(bodies)
    ]
    return b"\n".join(lines) + b"\n"


def summary(data: bytes) -> ProcessSummary:
    """Replay one log with the real replay and summarise it."""
    return summarize_process(replay_bytes(data).state)
