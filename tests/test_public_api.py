"""The public surface: what ``import energy_ledger`` gives, and what it does not load."""

from __future__ import annotations

import subprocess
import sys

import pytest

import energy_ledger

EXPECTED = {
    "aggregate_results",
    "validate_process_completeness",
    "export_aggregated_to_csv",
    "replay_root",
    "recover_experiment",
    "ProcessRecorder",
    "EventLogWriter",
    "ExperimentResult",
    "RawProcessResult",
    "LedgerError",
    "FormatError",
}


class TestSurface:
    """The package re-exports the calls users make, and only a small set of names."""

    def test_the_user_calls_are_exported(self) -> None:
        """The names the README and LLenergyMeasure callers use are all in ``__all__``."""
        assert set(energy_ledger.__all__) >= EXPECTED

    def test_the_surface_stays_small(self) -> None:
        """Internals are imported from their modules, not from the package."""
        assert len(energy_ledger.__all__) <= 20

    @pytest.mark.parametrize("name", sorted(energy_ledger.__all__))
    def test_every_exported_name_resolves(self, name: str) -> None:
        """Each name in ``__all__`` is an attribute of the package."""
        assert getattr(energy_ledger, name) is not None

    def test_the_recorder_is_the_real_class(self) -> None:
        """``energy_ledger.ProcessRecorder`` is the recorder module's class, loaded on use."""
        from energy_ledger.recorder.recorder import ProcessRecorder

        assert energy_ledger.ProcessRecorder is ProcessRecorder

    def test_an_unknown_name_is_an_attribute_error(self) -> None:
        """The lazy lookup does not swallow typos."""
        with pytest.raises(AttributeError, match="no_such_name"):
            _ = energy_ledger.no_such_name  # type: ignore[attr-defined]


class TestImportIsLight:
    """``import energy_ledger`` on an aggregation host loads no GPU or daemon code."""

    def test_the_daemon_without_metrics_loads_no_prometheus_client(self) -> None:
        """The package, the loop and its status load prometheus-client only for a metrics
        port (``daemon.run`` imports ``daemon.exporter`` then)."""
        code = (
            "import sys, energy_ledger, energy_ledger.cli\n"
            "import energy_ledger.daemon.run, energy_ledger.daemon.watcher\n"
            "print(sorted(m for m in sys.modules if m.startswith('prometheus_client')))\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
        assert out.strip() == "[]"

    def test_import_loads_neither_recorder_nor_pynvml_nor_watchdog(self) -> None:
        """A fresh interpreter that imports the package has none of them in ``sys.modules``."""
        code = (
            "import sys, energy_ledger\n"
            "heavy = ['pynvml', 'watchdog', 'energy_ledger.recorder.recorder',\n"
            "         'energy_ledger.gpu.nvml', 'energy_ledger.daemon.watcher']\n"
            "print(sorted(m for m in heavy if m in sys.modules))\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
        assert out.strip() == "[]"
