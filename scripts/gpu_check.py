"""GPU check: the ledger's energy against an independent reading of the NVML counter.

Needs a machine with an NVIDIA GPU and nvidia-ml-py. It starts ``--processes`` recorder processes
(spread round-robin over the GPUs, each pinned by UUID through ``CUDA_VISIBLE_DEVICES``), each
running a torch matmul loop when torch with CUDA is importable, else a CPU busy loop (the GPU then
idles; the comparison still holds). Meanwhile this parent process polls each GPU's energy counter
and power with pynvml directly, not through energy_ledger. Afterwards it aggregates the
experiment with energy_ledger's own library calls and prints, per GPU and in total, the ledger's
energy beside the independent counter delta over the same span (the earliest window start to the
latest window end on that GPU, as the aggregator uses) and beside a power integral.

    python scripts/gpu_check.py [--processes 4] [--seconds 10] [--root DIR]

``--fake`` runs the same flow on the fake NVML (workers get ``ENERGY_LEDGER_NVML=fake`` and the
poller reads its own ``FakeNvml``), to try the script on a machine without a GPU; the figures
then only show that the plumbing works.

Exit status 0 when the total differs by less than ``--tolerance-pct`` (default 1 %), else 1.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

EXPERIMENT_ID = "gpu-check"


def text(value: Any) -> str:
    """pynvml strings are bytes in old releases and str in new ones."""
    return value.decode() if isinstance(value, bytes) else str(value)


def worker(root: str, seconds: float) -> None:
    """One recorder process: a window of ``seconds`` of GPU (or CPU) work."""
    from energy_ledger.recorder.recorder import ProcessRecorder

    try:
        import torch

        use_torch = torch.cuda.is_available()
    except ImportError:
        use_torch = False
    with ProcessRecorder.from_env(root, EXPERIMENT_ID, config={"check": "gpu_check"}) as rec:
        if use_torch:
            a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
            b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
            torch.cuda.synchronize()
        with rec.window():
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                t0 = time.perf_counter()
                if use_torch:
                    for _ in range(20):
                        a @ b
                    torch.cuda.synchronize()
                else:
                    x = 0
                    for i in range(200_000):
                        x += i * i
                rec.request(
                    latency_ms=(time.perf_counter() - t0) * 1000, input_tokens=1, output_tokens=1
                )
    print(f"rank {rec.launch.process_index}: {'torch matmul' if use_torch else 'CPU busy loop'}")


class FakePynvml:
    """The few pynvml calls this script makes, answered by energy_ledger's fake GPUs."""

    def __init__(self) -> None:
        from energy_ledger.gpu.fake import FakeNvml

        self.fake = FakeNvml(4)

    def nvmlInit(self) -> None:  # noqa: N802 - pynvml's names
        pass

    def nvmlShutdown(self) -> None:  # noqa: N802
        pass

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        return self.fake.device_count()

    def nvmlDeviceGetHandleByIndex(self, i: int) -> Any:  # noqa: N802
        return self.fake.devices[i]

    def nvmlDeviceGetUUID(self, h: Any) -> str:  # noqa: N802
        return str(h.uuid)

    def nvmlDeviceGetName(self, h: Any) -> str:  # noqa: N802
        return str(h.info().name)

    def nvmlSystemGetDriverVersion(self) -> str:  # noqa: N802
        return str(self.fake.driver_version())

    def nvmlDeviceGetTotalEnergyConsumption(self, h: Any) -> int:  # noqa: N802
        return int(h.energy_mj())

    def nvmlDeviceGetPowerUsage(self, h: Any) -> int:  # noqa: N802
        return round(h.power_w() * 1000)


class Poller(threading.Thread):
    """Read (time, energy counter, power) of each GPU as often as NVML allows."""

    def __init__(self, pynvml: Any, handles: dict[str, Any]) -> None:
        super().__init__(daemon=True)
        self.nv = pynvml
        self.handles = handles
        self.readings: dict[str, list[tuple[float, int, float]]] = {u: [] for u in handles}
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            for gpu_uuid, handle in self.handles.items():
                energy_mj = self.nv.nvmlDeviceGetTotalEnergyConsumption(handle)
                power_w = self.nv.nvmlDeviceGetPowerUsage(handle) / 1000
                # Stamp after the read, as the recorder does at its window edges.
                self.readings[gpu_uuid].append((time.time(), energy_mj, power_w))
            time.sleep(0.002)

    def counter_at(self, gpu_uuid: str, t: float) -> int:
        """The last counter value read at or before ``t``."""
        rows = self.readings[gpu_uuid]
        i = bisect.bisect_right([r[0] for r in rows], t) - 1
        if i < 0:
            raise SystemExit(f"no independent reading before t={t} on {gpu_uuid}")
        return rows[i][1]

    def power_integral_j(self, gpu_uuid: str, t0: float, t1: float) -> float:
        """Trapezoid integral of the polled power over [t0, t1]."""
        rows = [r for r in self.readings[gpu_uuid] if t0 <= r[0] <= t1]
        return sum((b[0] - a[0]) * (a[2] + b[2]) / 2 for a, b in itertools.pairwise(rows))


def windows_per_gpu(root: Path) -> dict[str, tuple[float, float]]:
    """Per physical GPU UUID: earliest window start and latest window end, from the logs."""
    from energy_ledger.core.replay import replay_stream
    from energy_ledger.store.layout import ResultsLayout

    spans: dict[str, tuple[float, float]] = {}
    for path in sorted(ResultsLayout.at(root).experiment_dir(EXPERIMENT_ID).glob("*.jsonl")):
        with path.open("rb") as fp:
            state = replay_stream(fp, path=str(path)).state
        if state.started is None or state.window_start_t is None or state.window_end_t is None:
            raise SystemExit(f"{path}: no complete window")
        key = state.started.gpu_uuid or ""
        t0, t1 = spans.get(key, (state.window_start_t, state.window_end_t))
        spans[key] = (min(t0, state.window_start_t), max(t1, state.window_end_t))
    return spans


def main() -> int:
    """Run the check; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--root", help="results root (default: a new temporary folder)")
    parser.add_argument("--tolerance-pct", type=float, default=1.0)
    parser.add_argument("--fake", action="store_true", help="use the fake NVML (no GPU)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.root, args.seconds)
        return 0

    from energy_ledger.pipeline import replay_root, validate_experiment

    pynvml: Any
    if args.fake:
        pynvml = FakePynvml()
    else:
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception as exc:
            print(f"NVML is not usable here ({exc}); this check needs an NVIDIA GPU (or --fake)")
            return 2
    count = pynvml.nvmlDeviceGetCount()
    all_handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
    uuids = [text(pynvml.nvmlDeviceGetUUID(h)) for h in all_handles]
    names = [text(pynvml.nvmlDeviceGetName(h)) for h in all_handles]
    driver = text(pynvml.nvmlSystemGetDriverVersion())
    print(f"driver {driver}, {count} GPU(s): {', '.join(names)}")
    used = sorted({uuids[rank % count] for rank in range(args.processes)})
    poller = Poller(pynvml, {u: all_handles[uuids.index(u)] for u in used})

    root = Path(args.root or tempfile.mkdtemp(prefix="energy-ledger-gpu-check-"))
    env = os.environ | {"WORLD_SIZE": str(args.processes), "ENERGY_LEDGER_RUN_ID": uuid.uuid4().hex}
    env.pop("ENERGY_LEDGER_NVML", None)
    if args.fake:
        env["ENERGY_LEDGER_NVML"] = "fake"
    poller.start()
    time.sleep(0.5)
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", "--root", str(root), "--seconds",
             str(args.seconds)],
            env=env | {"RANK": str(rank), "LOCAL_RANK": str(rank),
                       "CUDA_VISIBLE_DEVICES": uuids[rank % count]},
        )
        for rank in range(args.processes)
    ]  # fmt: skip
    codes = [p.wait() for p in procs]
    time.sleep(0.5)
    poller.stop_event.set()
    poller.join()
    if any(codes):
        print(f"worker exit codes {codes}")
        return 1

    report = validate_experiment(root / "raw" / EXPERIMENT_ID).report
    if not report.is_complete:
        print(f"ledger not complete: {report.reasons}")
        return 1
    replay_root(root, force=True)
    import orjson

    result = orjson.loads((root / "aggregated" / f"{EXPERIMENT_ID}.json").read_bytes())
    ledger_j = float(result["total_energy_j"])
    counter_j = integral_j = 0.0
    for gpu_uuid, (t0, t1) in sorted(windows_per_gpu(root).items()):
        gpu_counter_j = (poller.counter_at(gpu_uuid, t1) - poller.counter_at(gpu_uuid, t0)) / 1000
        gpu_integral_j = poller.power_integral_j(gpu_uuid, t0, t1)
        counter_j += gpu_counter_j
        integral_j += gpu_integral_j
        print(
            f"{gpu_uuid}: span {t1 - t0:.3f} s, independent counter {gpu_counter_j:.1f} J, "
            f"polled power integral {gpu_integral_j:.1f} J"
        )
    diff_pct = (ledger_j - counter_j) / counter_j * 100 if counter_j else float("nan")
    integral_pct = (ledger_j - integral_j) / integral_j * 100 if integral_j else float("nan")
    print(f"ledger total_energy_j     {ledger_j:.3f} J ({args.processes} processes, {root})")
    print(f"independent NVML counter  {counter_j:.3f} J  difference {diff_pct:+.3f} %")
    print(f"independent power integral {integral_j:.3f} J  difference {integral_pct:+.3f} %")
    pynvml.nvmlShutdown()
    return 0 if abs(diff_pct) < args.tolerance_pct else 1


if __name__ == "__main__":
    sys.exit(main())
