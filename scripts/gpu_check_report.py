"""The GPU check's verdict and table: targets from the case figures, the printed report.

Pure functions over the figures ``gpu_check_case`` returns (and the pollers' readings for the
counter's update period), so that the report can be rebuilt from a ``summary.json``.
"""

from __future__ import annotations

import itertools
from typing import Any

import gpu_check_refs as refs
from gpu_check_case import Case


def target(name: str, value: Any, threshold: str, passed: bool) -> dict[str, Any]:
    """One target as it goes into ``summary.json``."""
    return {"name": name, "value": value, "threshold": threshold, "passed": passed}


def make_targets(
    cases: list[Case], results: dict[str, dict[str, Any]], tol_pct: float
) -> list[dict[str, Any]]:
    """The targets of every case, in case order."""
    targets = []
    for case in cases:
        r = results[case.name]
        name = case.name
        targets.append(
            target(f"{name}: measured and aggregated", r.get("error", "ok"), "ok", "error" not in r)
        )
        if case.energy_target:
            diff = r.get("diff_counter_pct")
            passed = diff is not None and abs(diff) <= tol_pct
            targets.append(
                target(f"{name}: energy vs counter delta (%)", diff, f"|x| <= {tol_pct:g}", passed)
            )
        if case.processes > 1:
            ratio = r.get("ratio_to_one_gpu")
            passed = ratio is not None and abs(ratio - 1) <= tol_pct / 100
            threshold = f"1 +- {tol_pct / 100:g}, not {case.processes}"
            targets.append(target(f"{name}: ledger / one GPU's delta", ratio, threshold, passed))
        if case.short:
            present = r.get("energy_unreliable")
            targets.append(
                target(f"{name}: energy_unreliable warning", present, "present", present is True)
            )
    return targets


def fmt(value: Any, spec: str = ".1f", sign: bool = False) -> str:
    """A figure for the table; ``-`` for a missing one."""
    if value is None:
        return "-"
    if isinstance(value, bool | str):
        return str(value)
    return format(value, ("+" if sign else "") + spec)


COLUMNS = (("case", 8), ("procs", 5), ("union_s", 8), ("ledger_J", 10), ("counter_J", 10),
           ("diff_J", 8), ("diff_%", 8), ("power_J", 10), ("diff_%", 8), ("instant_%", 9),
           ("sum/ledger", 10))  # fmt: skip
"""The case table: the last three are the ledger against the power integral (of
``nvmlDeviceGetPowerUsage``, then of the instantaneous field) and what adding up the processes'
own energies would give, in multiples of the ledger (2 and 4 for the shared cases)."""


def row(cells: tuple[str, ...]) -> str:
    return " ".join(
        f"{c:<{w}}" if i == 0 else f"{c:>{w}}"
        for i, (c, (_, w)) in enumerate(zip(cells, COLUMNS, strict=True))
    )


def report_lines(summary: dict[str, Any]) -> list[str]:
    """The printed table: cases, then targets, then the other figures."""
    lines = [row(tuple(name for name, _ in COLUMNS))]
    for name, r in summary["cases"].items():
        if "error" in r:
            lines.append(f"{name:<8} error: {r['error']}")
            continue
        naive = r["per_process_sum_j"] / r["ledger_j"] if r["ledger_j"] else None
        lines.append(row((
            name, str(r["processes"]), fmt(r["union_sec"], ".3f"), fmt(r["ledger_j"]),
            fmt(r["counter_ref_j"]), fmt(r["diff_counter_j"], ".2f", True),
            fmt(r["diff_counter_pct"], ".3f", True), fmt(r["power_ref_j"]),
            fmt(r["diff_power_pct"], ".3f", True), fmt(r["diff_power_instant_pct"], ".3f", True),
            fmt(naive, ".2f"),
        )))  # fmt: skip
    lines.append("")
    for t in summary["targets"]:
        value = fmt(t["value"], ".4f") if isinstance(t["value"], float) else fmt(t["value"])
        lines.append(
            f"{'PASS' if t['passed'] else 'FAIL'}  {t['name']:<42} {value:<14} ({t['threshold']})"
        )
    c, o = summary["counter"], summary["overhead"]
    lines += [
        "",
        f"counter update period {fmt(c['update_period_ms_median'], '.1f')} ms (median of "
        f"{c['changes']} intervals, polled every {fmt(c['poll_ms_median'], '.1f')} ms); "
        f"read p50 {fmt(c['read_ms_p50'], '.3f')} ms, p99 {fmt(c['read_ms_p99'], '.3f')} ms; "
        f"power polled every {fmt(c['power_poll_ms_median'], '.1f')} ms",
        f"request() p50 {fmt(o.get('request_p50_us'), '.2f')} us, p99 "
        f"{fmt(o.get('request_p99_us'), '.2f')} us ({o.get('requests')} calls, {o.get('nvml')} "
        f"sampler: {o.get('sampler_samples')} samples, "
        f"{fmt(o.get('sampler_core_pct'), '.3f')} % of a core)"
        + (f"; error: {o['error'].splitlines()[-1]}" if "error" in o else ""),
    ]
    return lines


def summarise_polls(pollers: list[refs.Poller]) -> dict[str, Any]:
    """The counter's update period and read cost, and the power poll interval, over all cases."""
    changes = [s for p in pollers for s in refs.change_intervals_sec(p.counter)]
    reads = [s for p in pollers for s in p.counter_cost_sec]
    counter_steps = [b[0] - a[0] for p in pollers for a, b in itertools.pairwise(p.counter)]
    power_steps = [b[0] - a[0] for p in pollers for a, b in itertools.pairwise(p.power)]

    def ms(value: float | None) -> float | None:
        return None if value is None else value * 1000

    return {
        "update_period_ms_median": ms(refs.median(changes)),
        "update_period_ms_p10": ms(refs.percentile(changes, 10)),
        "update_period_ms_p90": ms(refs.percentile(changes, 90)),
        "changes": len(changes),
        "poll_ms_median": ms(refs.median(counter_steps)),
        "read_ms_p50": ms(refs.percentile(reads, 50)),
        "read_ms_p99": ms(refs.percentile(reads, 99)),
        "power_poll_ms_median": ms(refs.median(power_steps)),
        "power_instant_supported": any(p.power_instant for p in pollers),
    }
