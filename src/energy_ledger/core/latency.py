"""Latency definitions shared with LLenergyMeasure: TTFT, trimmed and full ITL, TPOT (pure).

The per-request parts (trimming a request's inter-token latencies, its time per output token)
are folded in ``core.state`` as each ``request`` event arrives, because they need the request's
own boundaries; this module holds the experiment-level half and the interop payload:

- ``latency_statistics`` builds ``LatencyStatistics`` from the pooled samples of all
  processes, with LLenergyMeasure's meaning of the fields: ``itl_*`` are over the *trimmed*
  inter-token latencies (each request's first and last interval left out), ``itl_full_*`` over
  every interval. ``None`` when no TTFT was logged, as in LLenergyMeasure.
- ``latency_measurements`` is the raw-sample payload a process result carries in
  ``inference_metrics.latency_measurements``: exactly the keys of LLenergyMeasure's
  ``LatencyMeasurements`` dataclass, which LLenergyMeasure rebuilds with
  ``LatencyMeasurements(**d)`` when it re-aggregates a file (so no key may be added). Its lists
  are ``Samples`` views of the folded state's arrays (no copy; dumped as lists).
  ``read_latency_measurements`` reads it back.

See docs/metrics.md ("Latency statistics") for the formulas and where conventions differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from energy_ledger.core.stats import Values, summarize_pooled
from energy_ledger.models import LatencyStatistics
from energy_ledger.models.samples import Samples

MEASUREMENT_MODE = "true_streaming"
"""``LatencyMeasurementMode`` value for per-token timings logged as they happened."""


def latency_statistics(
    ttft_ms: Sequence[Values], itl_trimmed_ms: Sequence[Values], itl_full_ms: Sequence[Values]
) -> LatencyStatistics | None:
    """TTFT and ITL statistics over the processes' samples pooled; ``None`` without any TTFT.

    Each argument holds one list per process, in process order; they are pooled one at a time
    (``stats.summarize_pooled``), so that only one copy of one kind of sample exists at once.

    Args:
        ttft_ms: every request's time to first token.
        itl_trimmed_ms: the trimmed inter-token latencies (``itl_mean_ms`` and the rest).
        itl_full_ms: every inter-token latency (``itl_full_mean_ms``, ``itl_full_p99_ms``).
    """
    t = summarize_pooled(ttft_ms)
    if t is None:
        return None
    i = summarize_pooled(itl_trimmed_ms)
    f = summarize_pooled(itl_full_ms)
    return LatencyStatistics(
        ttft_mean_ms=t.mean,
        ttft_median_ms=t.median,
        ttft_p95_ms=t.p95,
        ttft_p99_ms=t.p99,
        ttft_min_ms=t.min,
        ttft_max_ms=t.max,
        ttft_samples=t.count,
        itl_mean_ms=i.mean if i else None,
        itl_median_ms=i.median if i else None,
        itl_p95_ms=i.p95 if i else None,
        itl_p99_ms=i.p99 if i else None,
        itl_samples=i.count if i else 0,
        itl_full_mean_ms=f.mean if f else None,
        itl_full_p99_ms=f.p99 if f else None,
    )


def latency_measurements(
    ttft_ms: Samples,
    itl_full_ms: Samples,
    itl_trimmed_ms: Samples,
    *,
    request_count: int,
    output_tokens: int,
    warmup_requests: int,
) -> dict[str, Any] | None:
    """One process's raw samples in the shape of LLenergyMeasure's ``LatencyMeasurements``.

    ``None`` when the process logged neither a TTFT nor an inter-token latency (LLenergyMeasure
    leaves the field empty when it did not stream). ``excluded_tokens`` counts the intervals the
    trimming left out, as LLenergyMeasure does. The lists are kept as given (``Samples``).
    """
    if len(ttft_ms) == 0 and len(itl_full_ms) == 0:
        return None
    return {
        "ttft_ms": ttft_ms,
        "itl_full_ms": itl_full_ms,
        "itl_trimmed_ms": itl_trimmed_ms,
        "request_count": request_count,
        "total_output_tokens": output_tokens,
        "excluded_tokens": len(itl_full_ms) - len(itl_trimmed_ms),
        "streaming_mode": True,
        "warmup_requests_excluded": warmup_requests,
        "measurement_mode": MEASUREMENT_MODE,
    }


def _float_list(value: object) -> Samples:
    if isinstance(value, Samples):
        return value
    if isinstance(value, list) and all(
        isinstance(x, int | float) and not isinstance(x, bool) for x in value
    ):
        return Samples(value)
    return Samples()


def read_latency_measurements(value: object) -> tuple[Samples, Samples, Samples]:
    """``(ttft_ms, itl_full_ms, itl_trimmed_ms)`` from a ``latency_measurements`` value.

    Reads LLenergyMeasure's keys; a file that has only ``itl_ms`` (an older shape) gives it as
    the full list and no trimmed list, since the request boundaries needed to trim it are gone.
    Anything that is not a list of numbers (or ``Samples``, from a replay) reads as empty.
    """
    if not isinstance(value, dict):
        return Samples(), Samples(), Samples()
    full_key = "itl_full_ms" if "itl_full_ms" in value else "itl_ms"
    return (
        _float_list(value.get("ttft_ms")),
        _float_list(value.get(full_key)),
        _float_list(value.get("itl_trimmed_ms")),
    )
