"""One case of the GPU check: start its recorder processes, poll the GPU, compare the ledger.

``run_case`` starts the ``Poller`` (``gpu_check_refs``), then ``processes`` real subprocesses
running ``gpu_check_worker.py record`` (each a ``ProcessRecorder`` under its own rank), lets their
windows open together through a file barrier, waits for them, stops the poller, aggregates the
experiment with energy_ledger's own ``process_experiment`` and compares its ``total_energy_j``
with the references over the same intervals.

The intervals are read from the raw logs themselves, with the stdlib ``json`` module (not
energy_ledger's reader): each process's ``window_started`` and ``window_ended`` ``t``, merged into
disjoint runs as the aggregator merges the windows of one GPU. The ledger's counter readings are
taken just before those ``t`` are stamped, so the reference counter is interpolated at the same
``t``; ``edge_offset_j_max`` says how far the ledger's own edge readings were from the reference
there (a step of the ~100 ms counter falling between the two is the usual cause).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gpu_check_refs as refs

WORKER = str(Path(__file__).resolve().with_name("gpu_check_worker.py"))
READY_TIMEOUT_SEC = 120.0
"""How long the ranks may take to start (imports, CUDA context, warm-up) before the case fails."""


@dataclass(frozen=True)
class Case:
    """One experiment of the check.

    Attributes:
        name: short name; the experiment id is ``gpu-check-<name>``.
        processes: recorder processes sharing the GPU.
        window_sec: each process's window.
        energy_target: whether the 0.5 % energy target applies (windows >= 10 s in the full run).
        short: whether the short-window warning must fire.
    """

    name: str
    processes: int
    window_sec: float
    energy_target: bool
    short: bool = False

    @property
    def experiment_id(self) -> str:
        return f"gpu-check-{self.name}"


@dataclass
class Context:
    """What every case shares: the GPU, the folders, the load and the timings."""

    nv: Any
    handle: Any
    gpu_uuid: str
    work: Path
    env: dict[str, str]
    load: str
    warmup_sec: float
    roll_sec: float
    counter_sleep_sec: float

    @property
    def root(self) -> Path:
        return self.work / "results"


class CaseError(Exception):
    """The case could not be measured (a rank failed, the ledger is not complete)."""


def start_ranks(case: Case, ctx: Context, barrier: Path) -> list[subprocess.Popen[bytes]]:
    """Start the case's recorder processes, output to ``workers/<experiment>-rank<r>.log``."""
    run_id = f"{case.experiment_id}-{os.getpid()}-{time.time_ns()}"
    procs = []
    for rank in range(case.processes):
        log = (ctx.work / "workers" / f"{case.experiment_id}-rank{rank}.log").open("wb")
        env = ctx.env | {
            "RANK": str(rank),
            "WORLD_SIZE": str(case.processes),
            "LOCAL_RANK": str(rank),
            "ENERGY_LEDGER_RUN_ID": run_id,
        }
        cmd = [
            sys.executable,
            WORKER,
            "record",
            "--root",
            str(ctx.root),
            "--experiment",
            case.experiment_id,
            "--seconds",
            str(case.window_sec),
            "--load",
            ctx.load,
            "--barrier",
            str(barrier),
            "--warmup-sec",
            str(ctx.warmup_sec),
        ]
        with log:
            procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT))
    return procs


def wait_ranks(case: Case, procs: list[subprocess.Popen[bytes]], barrier: Path) -> None:
    """Wait until every rank is ready, say go, then wait for them all to exit.

    Raises:
        CaseError: a rank exited early or with an error, or the ranks took too long.
    """
    deadline = time.monotonic() + READY_TIMEOUT_SEC
    while not all((barrier / f"ready-{r}").exists() for r in range(case.processes)):
        codes = [p.poll() for p in procs]
        if any(c is not None for c in codes) or time.monotonic() > deadline:
            for p in procs:
                p.kill()
            raise CaseError(f"ranks did not all get ready (exit codes {codes}); see workers/")
        time.sleep(0.005)
    (barrier / "go").touch()
    try:
        codes = [p.wait(timeout=case.window_sec + 120) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        raise CaseError("ranks did not finish in time; see workers/") from None
    if any(codes):
        raise CaseError(f"rank exit codes {codes}; see workers/")


def read_logs(experiment_dir: Path) -> list[dict[str, Any]]:
    """Per process log: its GPU, its window edges (t and counter) and its clock offsets."""
    processes = []
    for path in sorted(experiment_dir.glob("*.jsonl")):
        proc: dict[str, Any] = {"log": path.name, "clock_offsets_sec": []}
        for line in path.read_bytes().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            kind = event.get("type")
            if kind == "process_started":
                proc["gpu_uuid"] = event.get("gpu_uuid")
                proc["process_index"] = event.get("process_index")
            elif kind in ("window_started", "window_ended"):
                proc[kind] = (event["t"], event.get("energy_mj"))
            elif kind == "clock" and "wall_t" in event:
                proc["clock_offsets_sec"].append(event["wall_t"] - event["t"])
        if "window_started" not in proc or "window_ended" not in proc:
            raise CaseError(f"{path.name}: no complete window")
        processes.append(proc)
    if not processes:
        raise CaseError(f"{experiment_dir}: no process log")
    return processes


def pct(value: float, reference: float | None) -> float | None:
    """``value`` relative to ``reference``, in percent (None without a reference)."""
    if not reference:
        return None
    return (value - reference) / reference * 100


def compare(case: Case, ctx: Context, poller: refs.Poller) -> dict[str, Any]:
    """Aggregate the case's experiment and compare it with the references."""
    from energy_ledger.pipeline import process_experiment
    from energy_ledger.store.layout import ResultsLayout

    layout = ResultsLayout.at(ctx.root)
    outcome = process_experiment(layout, case.experiment_id, force=True)
    if outcome.state != "complete" or outcome.path is None:
        raise CaseError(f"ledger {outcome.state}, {outcome.action}: {outcome.detail}")
    result = json.loads(outcome.path.read_bytes())
    processes = read_logs(layout.experiment_dir(case.experiment_id))
    wrong_gpu = {p.get("gpu_uuid") for p in processes} - {ctx.gpu_uuid}
    if wrong_gpu:
        raise CaseError(f"processes measured {sorted(map(str, wrong_gpu))}, not {ctx.gpu_uuid}")
    windows = [(p["window_started"][0], p["window_ended"][0]) for p in processes]
    runs = refs.merge_windows(windows)
    try:
        counter_j = refs.counter_delta_j(poller.counter, runs)
        power_j = refs.power_integral_j(poller.power, runs)
        instant_j = (
            refs.power_integral_j(poller.power_instant, runs) if poller.power_instant else None
        )
        edge_offsets_j = [
            (mj - refs.interpolate(poller.counter, t)) / 1000
            for p in processes
            for t, mj in (p["window_started"], p["window_ended"])
            if mj is not None
        ]
    except ValueError as exc:
        raise CaseError(f"the polls do not cover the windows: {exc}") from None
    ledger_j = float(result["total_energy_j"])
    warnings = [str(w) for w in result.get("measurement_warnings") or []]
    per_process_j = [
        float(pr["energy_metrics"]["total_energy_j"]) for pr in result.get("process_results", [])
    ]
    offsets = [abs(o) for p in processes for o in p["clock_offsets_sec"]]
    return {
        "experiment_id": case.experiment_id,
        "processes": case.processes,
        "window_sec_requested": case.window_sec,
        "window_sec": [round(b - a, 6) for a, b in windows],
        "runs": [[a, b] for a, b in runs],
        "union_sec": sum(b - a for a, b in runs),
        "ledger_j": ledger_j,
        "ledger_sources": [g.get("energy_source") for g in result["aggregation"].get("gpus", [])],
        "per_process_sum_j": sum(per_process_j),
        "counter_ref_j": counter_j,
        "diff_counter_j": ledger_j - counter_j,
        "diff_counter_pct": pct(ledger_j, counter_j),
        "ratio_to_one_gpu": ledger_j / counter_j if counter_j else None,
        "power_ref_j": power_j,
        "diff_power_j": ledger_j - power_j,
        "diff_power_pct": pct(ledger_j, power_j),
        "power_instant_ref_j": instant_j,
        "diff_power_instant_pct": None if instant_j is None else pct(ledger_j, instant_j),
        "edge_offset_j_max": max(map(abs, edge_offsets_j), default=None),
        "clock_offset_ms_max": max(offsets) * 1000 if offsets else None,
        "measurement_warnings": warnings,
        "energy_unreliable": any(w.startswith("energy_unreliable") for w in warnings),
        "counter_polls": len(poller.counter),
        "power_polls": len(poller.power),
        "poll_errors": dict(poller.errors),
    }


def run_case(case: Case, ctx: Context) -> tuple[dict[str, Any], refs.Poller]:
    """Run one case; the figures (or ``{"error": ...}``) and the poller with its readings.

    Never raises: on a GPU lent for minutes, one case's trouble (or a bug here) must not cost
    the other cases their figures.
    """
    barrier = ctx.work / "barrier" / case.name
    poller = refs.Poller(ctx.nv, ctx.handle, counter_sleep_sec=ctx.counter_sleep_sec)
    try:
        barrier.mkdir(parents=True)
        poller.start()
        try:
            time.sleep(ctx.roll_sec)
            wait_ranks(case, start_ranks(case, ctx, barrier), barrier)
            time.sleep(ctx.roll_sec)
        finally:
            poller.stop()
            save_polls(ctx.work / "references" / f"{case.experiment_id}.json", poller)
        return compare(case, ctx, poller), poller
    except CaseError as exc:
        return {"experiment_id": case.experiment_id, "error": str(exc)}, poller
    except Exception as exc:
        error = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        return {"experiment_id": case.experiment_id, **error}, poller


def save_polls(path: Path, poller: refs.Poller) -> None:
    """The raw polls, so that the figures can be recomputed later."""
    payload = {
        "counter_mj": poller.counter,
        "counter_read_sec": poller.counter_cost_sec,
        "power_w": poller.power,
        "power_instant_w": poller.power_instant,
        "errors": poller.errors,
    }
    path.write_text(json.dumps(payload, separators=(",", ":")))
