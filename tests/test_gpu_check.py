"""``scripts/gpu_check.py`` on the fake NVML, and the pure arithmetic of its references.

The full check runs once per module, as a subprocess with ``--fake --quick``: the same flow as
on a GPU (real recorder processes, the pollers, the aggregation), with windows scaled down. It
takes 8 to 10 s (five cases of real processes that import energy_ledger, 4.7 s of windows), so
``TestFakeRun`` is marked slow; ``make test`` runs it.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
SCRIPT = SCRIPTS / "gpu_check.py"
CASES = ("single", "shared2", "shared4", "short", "long")


def run_check(
    out: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | (env or {}),
    )


@pytest.fixture(scope="module")
def refs() -> ModuleType:
    sys.path.insert(0, str(SCRIPTS))
    try:
        return importlib.import_module("gpu_check_refs")
    finally:
        sys.path.remove(str(SCRIPTS))


@pytest.fixture(scope="module")
def fake_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("gpu-check")
    return run_check(out, "--fake", "--quick"), out


@pytest.fixture(scope="module")
def summary(fake_run: tuple[subprocess.CompletedProcess[str], Path]) -> dict[str, Any]:
    proc, out = fake_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    loaded: dict[str, Any] = json.loads((out / "summary.json").read_text())
    return loaded


@pytest.mark.slow
class TestFakeRun:
    """The whole check on the fake NVML passes every target and writes its files."""

    def test_every_case_is_measured(self, summary: dict[str, Any]) -> None:
        """Each case has its own experiment, aggregated from its counter, without an error."""
        assert set(summary["cases"]) == set(CASES)
        for name, case in summary["cases"].items():
            assert "error" not in case, (name, case)
            assert case["experiment_id"] == f"gpu-check-{name}"
            assert case["ledger_sources"] == ["counter"]
            assert case["counter_ref_j"] > 0 and case["power_ref_j"] > 0

    def test_every_target_passes(self, summary: dict[str, Any]) -> None:
        """Every target is there for its case and passes; the verdict says so."""
        assert summary["passed"] is True
        names = [t["name"] for t in summary["targets"]]
        assert all(t["passed"] for t in summary["targets"]), summary["targets"]
        for name in ("single", "shared2", "shared4", "long"):
            assert f"{name}: energy vs counter delta (%)" in names
        assert "shared2: ledger / one GPU's delta" in names
        assert "shared4: ledger / one GPU's delta" in names
        assert "short: energy_unreliable warning" in names

    def test_short_window_warning_only_on_the_short_case(self, summary: dict[str, Any]) -> None:
        """energy_unreliable is in the short case's warnings, and only there."""
        for name, case in summary["cases"].items():
            flagged = any(w.startswith("energy_unreliable") for w in case["measurement_warnings"])
            assert flagged == (name == "short"), name
            assert case["energy_unreliable"] == flagged

    def test_shared_gpu_is_counted_once(self, summary: dict[str, Any]) -> None:
        """The ledger matches one GPU's delta; adding the processes up would give N times."""
        for name, n in (("shared2", 2), ("shared4", 4)):
            case = summary["cases"][name]
            assert case["processes"] == n
            assert case["ratio_to_one_gpu"] == pytest.approx(1, abs=0.005)
            assert case["per_process_sum_j"] / case["ledger_j"] == pytest.approx(n, rel=0.1)

    def test_summary_records_the_setting(self, summary: dict[str, Any]) -> None:
        """GPU, versions, load, overhead and the counter's period are recorded."""
        assert summary["mode"] == "fake"
        assert summary["gpu"]["uuid"].startswith("GPU-")
        assert {"name", "driver", "nvml_version"} <= set(summary["gpu"])
        assert {"python", "energy_ledger", "nvidia_ml_py"} <= set(summary["software"])
        assert summary["load"]["kind"] == "cpu"
        assert summary["overhead"]["request_p50_us"] > 0
        assert summary["overhead"]["request_p99_us"] >= summary["overhead"]["request_p50_us"]
        assert summary["counter"]["update_period_ms_median"] > 0

    def test_table_and_files(self, fake_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
        """The table is printed and saved; the archive holds the results root and the polls."""
        proc, out = fake_run
        assert "ALL TARGETS PASS" in proc.stdout
        assert "FAIL" not in proc.stdout
        assert sorted(p.name for p in out.iterdir()) == [
            "gpu_check.txt",
            "results.tar.gz",
            "summary.json",
        ]
        assert "ALL TARGETS PASS" in (out / "gpu_check.txt").read_text()
        with tarfile.open(out / "results.tar.gz") as tar:
            names = set(tar.getnames())
        for name in CASES:
            assert f"results/aggregated/gpu-check-{name}.json" in names
            assert f"results/raw/gpu-check-{name}/process_0.events.jsonl" in names
            assert f"references/gpu-check-{name}.json" in names
        assert "results/raw/gpu-check-shared4/process_3.events.jsonl" in names


class TestFailures:
    """The check fails when the ledger is wrong, and refuses to run without a GPU."""

    def test_a_ledger_without_energy_fails_the_check(self, tmp_path: Path) -> None:
        """With every energy and power read failing in the recorder, exit status is 1."""
        faults = {"ENERGY_LEDGER_FAKE_FAULTS": "energy_mj@*;power_w@*"}
        proc = run_check(tmp_path, "--fake", "--quick", "--cases", "single", env=faults)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        summary = json.loads((tmp_path / "summary.json").read_text())
        failed = [t["name"] for t in summary["targets"] if not t["passed"]]
        assert failed == ["single: energy vs counter delta (%)"]
        assert "SOME TARGETS FAIL" in proc.stdout

    def test_unknown_case_is_a_setup_error(self, tmp_path: Path) -> None:
        """A bad option exits 2 with a message, no traceback, and writes nothing."""
        proc = run_check(tmp_path, "--fake", "--cases", "nope")
        assert proc.returncode == 2
        assert "cannot run" in proc.stderr and "Traceback" not in proc.stderr
        assert not list(tmp_path.iterdir())

    def test_no_gpu_without_fake_is_a_setup_error(self, tmp_path: Path) -> None:
        """Without NVML and without --fake: exit 2 and a clear message."""
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception:
            pass
        else:
            pynvml.nvmlShutdown()
            pytest.skip("this machine has a working NVML")
        proc = run_check(tmp_path, "--quick")
        assert proc.returncode == 2
        assert "needs an NVIDIA GPU" in proc.stderr or "nvidia-ml-py" in proc.stderr
        assert "Traceback" not in proc.stderr


class TestReferences:
    """The reference arithmetic: merged windows, interpolation, trapezoids, update period."""

    @pytest.mark.parametrize(
        ("windows", "runs"),
        [
            ([], []),
            ([(0, 1)], [(0, 1)]),
            ([(0, 2), (1, 3)], [(0, 3)]),
            ([(1, 3), (0, 2), (5, 6)], [(0, 3), (5, 6)]),
            ([(0, 1), (1, 2)], [(0, 2)]),
            ([(0, 10), (2, 3)], [(0, 10)]),
        ],
    )
    def test_merge_windows(self, refs: ModuleType, windows: list, runs: list) -> None:
        """Overlapping or touching windows join, as the aggregator merges one GPU's windows."""
        assert refs.merge_windows(windows) == runs

    @pytest.mark.parametrize(("t", "value"), [(0.0, 0.0), (0.5, 50.0), (1.0, 100.0), (1.25, 125.0)])
    def test_interpolate(self, refs: ModuleType, t: float, value: float) -> None:
        """Linear between the two polls around ``t``; exact on a poll."""
        polls = [(0.0, 0.0), (1.0, 100.0), (2.0, 200.0)]
        assert refs.interpolate(polls, t) == pytest.approx(value)

    def test_interpolate_outside_the_polls_raises(self, refs: ModuleType) -> None:
        """A window the poller did not bracket is an error, not an extrapolation."""
        with pytest.raises(ValueError, match="outside the polled span"):
            refs.interpolate([(1.0, 0.0), (2.0, 1.0)], 0.5)

    def test_counter_delta_leaves_gaps_out(self, refs: ModuleType) -> None:
        """Two runs of 1 s on a 100 W counter (mJ) give 200 J, not the 400 J over the span."""
        polls = [(t / 10, t / 10 * 100_000) for t in range(0, 51)]
        assert refs.counter_delta_j(polls, [(0.5, 1.5), (3.0, 4.0)]) == pytest.approx(200)

    def test_power_integral_interpolates_its_ends(self, refs: ModuleType) -> None:
        """A 0 to 100 W ramp over 1 s integrates to 50 J, and from 0.05 s to 0.55 s to 15 J."""
        polls = [(t / 10, t * 10.0) for t in range(11)]
        assert refs.power_integral_j(polls, [(0.0, 1.0)]) == pytest.approx(50)
        assert refs.power_integral_j(polls, [(0.05, 0.55)]) == pytest.approx(15)

    def test_change_intervals(self, refs: ModuleType) -> None:
        """A counter polled every 10 ms that steps every 100 ms has a 100 ms period."""
        polls = [(i / 100, float(i // 10)) for i in range(100)]
        assert refs.change_intervals_sec(polls) == pytest.approx([0.1] * 8)
