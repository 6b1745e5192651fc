"""The key figures of a result, by name, units in the names (pure).

Every value is a field of the result as written, except two that docs/metrics.md ("Report")
derives: J per request and the average power of all GPUs. Both pages take their numbers from
here, so the experiment page and the comparison table cannot disagree.
"""

from __future__ import annotations

from typing import Any

from energy_ledger.report.digest import ResultDigest

FIGURES: tuple[tuple[str, str, str], ...] = (
    ("energy_per_output_token_j", "Energy per output token", "J"),
    ("energy_per_request_j", "Energy per request", "J"),
    ("total_energy_j", "Total energy", "J"),
    ("energy_adjusted_j", "Energy above idle baseline", "J"),
    ("avg_power_w", "Average power (all GPUs)", "W"),
    ("tokens_per_second", "Throughput (all tokens)", "tokens/s"),
    ("output_tokens_per_second", "Throughput (output tokens)", "tokens/s"),
    ("requests", "Requests", ""),
    ("output_tokens", "Output tokens", ""),
    ("inference_time_sec", "Measured time", "s"),
    ("ttft_p50_ms", "TTFT p50", "ms"),
    ("ttft_p95_ms", "TTFT p95", "ms"),
    ("ttft_p99_ms", "TTFT p99", "ms"),
    ("itl_p50_ms", "ITL p50", "ms"),
    ("itl_p95_ms", "ITL p95", "ms"),
    ("itl_p99_ms", "ITL p99", "ms"),
    ("e2e_latency_p50_ms", "End-to-end latency p50", "ms"),
    ("e2e_latency_p95_ms", "End-to-end latency p95", "ms"),
    ("e2e_latency_p99_ms", "End-to-end latency p99", "ms"),
)
"""Every key figure, in page order: (name in ``figures_of``, label, unit)."""


def requests_of(d: ResultDigest) -> int | None:
    """Requests measured: the e2e latency samples, else the processes' request counts."""
    e2e = d.extended_metrics.request_latency if d.extended_metrics else None
    if e2e is not None and e2e.e2e_latency_samples:
        return e2e.e2e_latency_samples
    counts = [request_count(p) for p in d.process_results]
    known = [c for c in counts if c is not None]
    return sum(known) if known else None


def request_count(p: Any) -> int | None:
    lm = p.inference_metrics.latency_measurements
    if lm is not None and lm.request_count is not None:
        return int(lm.request_count)
    return len(p.per_request_latencies_ms) or None


def figures_of(d: ResultDigest) -> dict[str, float | int | None]:
    """The key figures of a result, by name; the values are the result's own fields.

    Two are derived (docs/metrics.md, "Report"): ``energy_per_request_j`` is
    ``total_energy_j / requests``, and ``avg_power_w`` is the sum over the physical GPUs of
    each one's ``avg_power_w`` in ``aggregation.gpus`` (its energy over its covered seconds).
    """
    lat = d.latency_stats
    e2e = d.extended_metrics.request_latency if d.extended_metrics else None
    requests = requests_of(d)
    gpus = d.aggregation.gpus if d.aggregation else []
    powers = [g.avg_power_w for g in gpus if g.avg_power_w is not None]
    output_tokens = sum(p.inference_metrics.output_tokens for p in d.process_results)
    return {
        "energy_per_output_token_j": d.avg_energy_per_token_j,
        "energy_per_request_j": d.total_energy_j / requests if requests else None,
        "total_energy_j": d.total_energy_j,
        "energy_adjusted_j": d.energy_adjusted_j,
        "avg_power_w": sum(powers) if powers else None,
        "tokens_per_second": d.avg_tokens_per_second,
        "output_tokens_per_second": d.aggregation.output_tokens_per_second
        if d.aggregation
        else None,
        "requests": requests,
        "output_tokens": output_tokens,
        "inference_time_sec": d.total_inference_time_sec,
        "ttft_p50_ms": lat.ttft_median_ms if lat else None,
        "ttft_p95_ms": lat.ttft_p95_ms if lat else None,
        "ttft_p99_ms": lat.ttft_p99_ms if lat else None,
        "itl_p50_ms": lat.itl_median_ms if lat else None,
        "itl_p95_ms": lat.itl_p95_ms if lat else None,
        "itl_p99_ms": lat.itl_p99_ms if lat else None,
        "e2e_latency_p50_ms": e2e.e2e_latency_median_ms if e2e else None,
        "e2e_latency_p95_ms": e2e.e2e_latency_p95_ms if e2e else None,
        "e2e_latency_p99_ms": e2e.e2e_latency_p99_ms if e2e else None,
        "processes": len(d.process_results),
        "gpus": len(gpus),
    }


__all__ = ["FIGURES", "figures_of", "request_count", "requests_of"]
