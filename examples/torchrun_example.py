"""Measure a (toy) inference loop on every rank of a torchrun launch with ProcessRecorder.

On GPUs (one process per GPU; torchrun sets RANK, WORLD_SIZE, LOCAL_RANK and, with
--standalone, a shared TORCHELASTIC_RUN_ID)::

    torchrun --standalone --nproc-per-node=4 examples/torchrun_example.py --root results
    energy-ledger validate results/raw/torchrun-demo
    energy-ledger replay results

Without a GPU, with the fake NVML and the launcher's variables set by hand::

    for r in 0 1; do ENERGY_LEDGER_NVML=fake ENERGY_LEDGER_RUN_ID=demo RANK=$r WORLD_SIZE=2 \\
        LOCAL_RANK=$r python examples/torchrun_example.py --root results & done; wait

When torch with CUDA is importable, each "request" is a small matmul chain on the rank's GPU;
otherwise it is a short sleep, so the example runs anywhere.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

from energy_ledger import ProcessRecorder


def make_step() -> tuple[str, Callable[[], None]]:
    """A function that serves one fake request, and a word for what it does."""
    try:
        import torch

        if torch.cuda.is_available():
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
            weight = torch.randn(4096, 4096, device=device, dtype=torch.float16)
            state = torch.randn(64, 4096, device=device, dtype=torch.float16)

            def gpu_step() -> None:
                x = state
                for _ in range(32):
                    x = torch.tanh(x @ weight)
                torch.cuda.synchronize(device)

            return "torch", gpu_step
    except ImportError:
        pass
    return "sleep", lambda: time.sleep(0.005)


def main() -> None:
    """Run the measured loop on this rank."""
    parser = argparse.ArgumentParser(description="ProcessRecorder under torchrun")
    parser.add_argument("--root", default="results")
    parser.add_argument("--experiment", default="torchrun-demo")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--baseline-sec", type=float, default=1.0)
    args = parser.parse_args()

    kind, step = make_step()
    config = {"model_name": f"toy-{kind}", "requests": args.requests}
    with ProcessRecorder.from_env(args.root, args.experiment, config=config) as rec:
        rec.baseline(seconds=args.baseline_sec)
        with rec.window():
            for _ in range(args.requests):
                t0 = time.perf_counter()
                step()
                rec.request(
                    latency_ms=(time.perf_counter() - t0) * 1000,
                    input_tokens=64,
                    output_tokens=32,
                )
    print(f"rank {rec.launch.process_index}/{rec.launch.world_size} ({kind}): {rec.log_path}")


if __name__ == "__main__":
    main()
