"""GPU check: the ledger's energy against two independent NVML references, on one real GPU.

    python scripts/gpu_check.py --out "$OUT"          # on a machine with an NVIDIA GPU
    python scripts/gpu_check.py --fake --quick        # the same flow on the fake NVML, seconds

Cases, each its own experiment id (``gpu-check-<case>``) under one results root, on one GPU
(``--gpu``, an NVML index or a UUID; default 0), each process a real subprocess running
``ProcessRecorder`` (rank, world size and run id through ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/
``ENERGY_LEDGER_RUN_ID``, the GPU through ``CUDA_VISIBLE_DEVICES=<UUID>``):

    case      processes  window (default)  checks
    single    1          20 s              energy within 0.5 % of the counter delta
    shared2   2          20 s              the same, and counted once (not 2x)
    shared4   4          20 s              the same, and counted once (not 4x)
    short     1          0.5 s             the short-window warning energy_unreliable
    long      1          40 s              energy within 0.5 % of the counter delta

Default durations: five windows of 100.5 s in all, each rank warmed up under load for 2 s before
its window (``--warmup-sec``), 0.5 s of polling before and after each case; with the ranks'
start (imports, CUDA context) and the overhead measurement (200 000 ``request()`` calls spread
over 5 s) about 3 to 5 minutes on an H200. ``--quick`` scales the windows to 1 s (1.2 s long,
0.5 s short), no warm-up, 0.05 s of polling around each case and 20 000 calls over 0.5 s: a
few seconds on the fake NVML. The cases keep their targets.

References, taken by this process with pynvml (``gpu_check_refs``), never through energy_ledger,
over the same intervals as the ledger (the union of the case's windows, read from the logs'
``window_started``/``window_ended`` ``t``): the energy counter polled every ~5 ms plus its read
time and interpolated linearly at each edge, and the 10 ms trapezoid integral of
``nvmlDeviceGetPowerUsage`` (plus ``NVML_FI_DEV_POWER_INSTANT`` where offered). Also recorded:
``request()`` p50/p99 with the real sampler running, the counter's update period (median time
between changes of the polled counter) and its read cost, the GPU, driver, NVML and nvidia-ml-py.

GPU load, first that works (``--load`` forces one): torch with CUDA, cupy, else a CPU busy loop
(the GPU then idles; the comparison still holds). Nothing is installed: without torch and cupy
it prints the ``pip install`` that would help. With ``--fake`` the load is the CPU loop.
``--cases`` runs a subset; ``--work DIR`` keeps the results root and the polls in ``DIR``.

Writes to ``--out`` (default ``$OUT`` when set, else a new temporary folder, printed at the
end) three files, so that a copy-back that limits the number of files loses nothing:
``summary.json`` (every figure, target and version), ``results.tar.gz`` (the results root with
raw logs and aggregated results, the raw polls under ``references/`` and the ranks' output under
``workers/``) and ``gpu_check.txt`` (what was printed). Exit status: 0 when every target passes,
1 when one fails, 2 when the check cannot run (no GPU and no ``--fake``, a bad option).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import gpu_check_refs as refs
from gpu_check_case import Case, Context, run_case
from gpu_check_report import make_targets, report_lines, summarise_polls
from gpu_check_worker import RESULT_PREFIX, ensure_energy_ledger

WORKER = str(Path(__file__).resolve().with_name("gpu_check_worker.py"))
FULL = {
    "window_sec": 20.0,
    "long_sec": 40.0,
    "short_sec": 0.5,
    "warmup_sec": 2.0,
    "roll_sec": 0.5,
    "requests": 200_000,
    "overhead_sec": 5.0,
}
QUICK = {
    "window_sec": 1.0,
    "long_sec": 1.2,
    "short_sec": 0.5,
    "warmup_sec": 0.0,
    "roll_sec": 0.05,
    "requests": 20_000,
    "overhead_sec": 0.5,
}
CASE_NAMES = ("single", "shared2", "shared4", "short", "long")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="output folder (default: $OUT, else a temporary folder)")
    parser.add_argument("--gpu", default="0", help="NVML index or UUID (prefix) of the GPU")
    parser.add_argument("--fake", action="store_true", help="use the fake NVML (no GPU)")
    parser.add_argument("--quick", action="store_true", help="scale every window down")
    parser.add_argument("--load", choices=["auto", "torch", "cupy", "cpu"], default="auto")
    parser.add_argument("--cases", default=",".join(CASE_NAMES), help="comma-separated subset")
    parser.add_argument("--tolerance-pct", type=float, default=0.5)
    parser.add_argument(
        "--counter-poll-ms",
        type=float,
        default=5.0,
        help="sleep between two reads of the energy counter",
    )
    parser.add_argument("--work", help="keep the results root and polls here (default: temp)")
    for key in FULL:
        flag = "--" + key.replace("_", "-")
        parser.add_argument(flag, type=type(FULL[key]), help=f"default {FULL[key]} ({QUICK[key]})")
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def make_cases(args: argparse.Namespace) -> list[Case]:
    """The cases named by ``--cases``, with their windows."""
    all_cases = {
        "single": Case("single", 1, args.window_sec, energy_target=True),
        "shared2": Case("shared2", 2, args.window_sec, energy_target=True),
        "shared4": Case("shared4", 4, args.window_sec, energy_target=True),
        "short": Case("short", 1, args.short_sec, energy_target=False, short=True),
        "long": Case("long", 1, args.long_sec, energy_target=True),
    }
    names = [n.strip() for n in args.cases.split(",") if n.strip()]
    unknown = sorted(set(names) - set(all_cases))
    if unknown or not names:
        raise refs.SetupError(f"--cases: unknown {unknown}; choose from {list(all_cases)}")
    if args.short_sec >= 1.0:
        raise refs.SetupError("--short-sec must be under 1 s (the energy_unreliable threshold)")
    return [all_cases[n] for n in names]


def child(args: list[str], env: dict[str, str], timeout_sec: float = 180) -> dict[str, Any]:
    """Run a worker mode and return the JSON it printed (``{"error": ...}`` when it failed)."""
    try:
        proc = subprocess.run(
            [sys.executable, WORKER, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_sec,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"{args[0]} timed out after {timeout_sec:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            result: dict[str, Any] = json.loads(line[len(RESULT_PREFIX) :])
            return result
    return {"error": f"{args[0]} exited {proc.returncode}: {proc.stderr.strip()[-1500:]}"}


def choose_load(
    args: argparse.Namespace, env: dict[str, str], cuda_major: int | None
) -> dict[str, Any]:
    """What will load the GPU: the first of torch, cupy, CPU that runs here."""
    if args.fake and args.load == "auto":
        return {"kind": "cpu", "detail": "CPU busy loop (fake NVML: no GPU to load)", "tried": {}}
    load = child(["probe", "--load", args.load], env)
    if load.get("kind") is None:
        raise refs.SetupError(f"no load runs here: {load}")
    if load["kind"] == "cpu":
        package = f"cupy-cuda{cuda_major}x" if cuda_major else "cupy-cuda12x"
        load["hint"] = (
            f"the GPU idles: `pip install {package}` (the CUDA major version of the "
            "driver) or torch with CUDA would load it"
        )
    return load


def versions() -> dict[str, Any]:
    import energy_ledger

    def dist(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "energy_ledger": energy_ledger.__version__,
        "nvidia_ml_py": dist("nvidia-ml-py"),
    }


def setup(args: argparse.Namespace) -> tuple[Any, dict[str, Any], Any, dict[str, str]]:
    """Open NVML (or the fake) and the GPU; the worker environment.

    Raises:
        SetupError: the check cannot run here.
    """
    try:
        ensure_energy_ledger()
        import energy_ledger.pipeline  # noqa: F401 - fail here, not in the middle
    except ImportError as exc:
        message = f"energy_ledger cannot be imported ({exc}): `pip install -e .`"
        raise refs.SetupError(message) from None
    fake_gpus = int(os.environ.get("ENERGY_LEDGER_FAKE_GPUS", "8"))
    nv = refs.open_pynvml(args.fake, fake_gpus)
    index, handle, gpu_uuid = refs.resolve_gpu(nv, args.gpu)
    try:
        nv.nvmlDeviceGetTotalEnergyConsumption(handle)
    except Exception as exc:
        raise refs.SetupError(f"GPU {gpu_uuid} has no readable energy counter ({exc})") from None
    drop = {"TORCHELASTIC_RUN_ID", "ENERGY_LEDGER_TP_SIZE", "ENERGY_LEDGER_NVML"}
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("SLURM_")}
    env |= {"CUDA_VISIBLE_DEVICES": gpu_uuid, "PYTHONUNBUFFERED": "1"}
    if args.fake:
        env["ENERGY_LEDGER_NVML"] = "fake"
    return nv, refs.gpu_facts(nv, index, handle, gpu_uuid), handle, env


class Printer:
    """Print lines as they come and keep them for ``gpu_check.txt``."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        print(line, flush=True)


def run_all(
    args: argparse.Namespace, ctx: Context, cases: list[Case], say: Printer
) -> tuple[dict[str, dict[str, Any]], list[refs.Poller], dict[str, Any]]:
    """Every case, then the overhead; (results by case, pollers, overhead)."""
    results: dict[str, dict[str, Any]] = {}
    pollers = []
    for case in cases:
        t0 = time.monotonic()
        results[case.name], poller = run_case(case, ctx)
        pollers.append(poller)
        outcome = results[case.name].get("error", "done")
        say(
            f"case {case.name}: {case.processes} process(es), {case.window_sec:g} s window: "
            f"{outcome} ({time.monotonic() - t0:.1f} s)"
        )
    nvml = "fake" if args.fake else "nvml"
    overhead = child(
        [
            "overhead",
            "--root",
            str(ctx.work / "overhead"),
            "--device",
            ctx.gpu_uuid,
            "--nvml",
            nvml,
            "--requests",
            str(args.requests),
            "--seconds",
            str(args.overhead_sec),
        ],
        ctx.env,
    )
    shutil.rmtree(ctx.work / "overhead", ignore_errors=True)
    return results, pollers, overhead


def archive(path: Path, work: Path) -> None:
    """The results root, the raw polls and the ranks' output, as one file."""
    with tarfile.open(path, "w:gz") as tar:
        for sub in ("results", "references", "workers"):
            tar.add(work / sub, arcname=sub)


def main(argv: list[str] | None = None) -> int:
    """Run the check; return the exit status."""
    args = parse_args(argv)
    started = time.monotonic()
    try:
        cases = make_cases(args)
        nv, gpu, handle, env = setup(args)
        out = Path(args.out or os.environ.get("OUT") or tempfile.mkdtemp(prefix="gpu-check-"))
        out.mkdir(parents=True, exist_ok=True)
        if args.work and Path(args.work).exists() and any(Path(args.work).iterdir()):
            raise refs.SetupError(f"--work {args.work} is not empty (a ledger is written once)")
        load = choose_load(args, env, gpu["cuda_driver_major"])
    except (refs.SetupError, OSError) as exc:
        print(f"gpu_check: cannot run: {exc}", file=sys.stderr)
        return 2
    work = Path(args.work or tempfile.mkdtemp(prefix="gpu-check-work-"))
    for sub in ("results", "references", "workers"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    say = Printer()
    date = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    fake = " (FAKE NVML)" if args.fake else ""
    say(
        f"gpu_check {date}{fake}: {gpu['name']} {gpu['uuid']}, driver {gpu['driver']}, "
        f"NVML {gpu['nvml_version']}, CUDA {gpu['cuda_driver_version']}"
    )
    say(f"load: {load['kind']}: {load['detail']}")
    if "hint" in load:
        say(f"hint: {load['hint']}")
    ctx = Context(
        nv,
        handle,
        gpu["uuid"],
        work,
        env,
        load["kind"],
        args.warmup_sec,
        args.roll_sec,
        args.counter_poll_ms / 1000,
    )
    try:
        results, pollers, overhead = run_all(args, ctx, cases, say)
    finally:
        nv.nvmlShutdown()
    targets = make_targets(cases, results, args.tolerance_pct)
    summary = {
        "check": "energy-ledger scripts/gpu_check.py",
        "date": date,
        "mode": "fake" if args.fake else "nvml",
        "quick": args.quick,
        "gpu": gpu,
        "software": versions(),
        "load": load,
        "settings": {k: getattr(args, k) for k in FULL} | {"counter_poll_ms": args.counter_poll_ms},
        "tolerance_pct": args.tolerance_pct,
        "cases": results,
        "counter": summarise_polls(pollers),
        "overhead": overhead,
        "targets": targets,
        "passed": all(t["passed"] for t in targets),
        "elapsed_sec": round(time.monotonic() - started, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    archive(out / "results.tar.gz", work)
    for line in report_lines(summary):
        say(line)
    verdict = "ALL TARGETS PASS" if summary["passed"] else "SOME TARGETS FAIL"
    say(
        f"{verdict} in {summary['elapsed_sec']} s; wrote summary.json, results.tar.gz and "
        f"gpu_check.txt to {out}"
    )
    (out / "gpu_check.txt").write_text("\n".join(say.lines) + "\n")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
