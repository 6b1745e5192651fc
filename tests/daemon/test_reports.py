"""Tests of ``daemon.reports.ReportWriter`` (``watch --report``), and of the daemon using it.

The writer's tests run its real thread on a real simulated root; the counting tests wrap the
``report.build`` functions it calls (``writer._build``) with spies that call through. One slow
test starts ``energy-ledger watch --report`` as a process and waits for its pages.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from energy_ledger.cli import cli
from energy_ledger.daemon.config import WatchConfig
from energy_ledger.daemon.reports import ReportWriter
from energy_ledger.exceptions import LedgerError
from energy_ledger.pipeline import replay_root
from energy_ledger.report import build
from energy_ledger.simulate import simulate
from tests.daemon.procs import Daemon
from tests.helpers import child_env, read_status, wait_for

HINT = "pip install 'energy-ledger[report]'"
IDS = ["sim-0000", "sim-0001", "sim-0002"]


RUN_WATCH = """
import sys
from pathlib import Path

from energy_ledger.cli.app import setup_logging
from energy_ledger.daemon.config import WatchConfig
from energy_ledger.daemon.run import run_watch

setup_logging(1)
config = WatchConfig(poll_interval_sec=0.1, reconcile_interval_sec=2.0, report=True)
sys.exit(run_watch(Path(sys.argv[1]), config))
"""
"""The daemon with ``report=True`` set directly, past the command line's config parsing."""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """Three emitted experiments of one process each."""
    root = tmp_path / "results"
    simulate(root, experiments=3, processes=1, requests=10)
    replay_root(root)
    return root


@pytest.fixture
def writers() -> Iterator[Callable[..., ReportWriter]]:
    """Start ``ReportWriter``s; each is closed at teardown (a failed test leaves no thread)."""
    started: list[ReportWriter] = []

    def start(root: Path, **kwargs: Any) -> ReportWriter:
        writer = ReportWriter(root, **kwargs)
        started.append(writer)
        return writer

    yield start
    for writer in started:
        writer.close(timeout_sec=30)


class Spy:
    """Counts the calls of a ``report.build`` function and calls through to it.

    A call is recorded once it has returned (its files are written by then). ``gate``: when
    given, every call waits for it first (so the test decides when work runs).
    """

    def __init__(self, real: Callable[..., Any], gate: threading.Event | None = None) -> None:
        self.real = real
        self.gate = gate
        self.calls: list[tuple[Any, ...]] = []
        self._lock = threading.Lock()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.gate is not None:
            assert self.gate.wait(30), "the test never opened the gate"
        try:
            return self.real(*args, **kwargs)
        finally:
            with self._lock:
                self.calls.append(args)


def spy_on(
    monkeypatch: pytest.MonkeyPatch,
    writer: ReportWriter,
    name: str,
    gate: threading.Event | None = None,
) -> Spy:
    """Replace ``writer._build.<name>`` with a ``Spy`` of it (undone at teardown)."""
    assert writer._build is build
    spy = Spy(getattr(writer._build, name), gate)
    monkeypatch.setattr(writer._build, name, spy)
    return spy


def recorder(calls: list[WatchConfig]) -> Callable[[Path, WatchConfig], int]:
    """A stand-in for ``run_watch`` that records the config it is given and returns 0."""

    def fake_run_watch(root: Path, config: WatchConfig) -> int:
        calls.append(config)
        return 0

    return fake_run_watch


def comparison_ids(root: Path) -> set[str]:
    """The experiments the comparison page has a row for."""
    text = (root / "aggregated" / "report.html").read_text()
    return {i for i in IDS if f'data-experiment="{i}"' in text}


class TestReportWriter:
    """The writer thread: a page per submitted id, the comparison once the queue drains."""

    def test_pages_and_comparison(self, root: Path, writers: Callable[..., ReportWriter]) -> None:
        """Each submitted id gets its page; the comparison page follows, linking them."""
        writer = writers(root, comparison_interval_sec=0.0)
        for experiment_id in IDS[:2]:
            writer.submit(experiment_id)
        wait_for(lambda: writer.pages_written == 2, "two pages")
        comparison = root / "aggregated" / "report.html"
        wait_for(lambda: comparison.exists() and comparison_ids(root) == set(IDS), "comparison")
        wait_for(
            lambda: 'href="sim-0001.report.html"' in comparison.read_text(),
            "the comparison with both links",
        )
        for experiment_id in IDS[:2]:
            assert (root / "aggregated" / f"{experiment_id}.report.html").is_file()
        assert not (root / "aggregated" / "sim-0002.report.html").exists()
        assert writer.failures == 0

    def test_burst_makes_one_comparison(
        self, root: Path, writers: Callable[..., ReportWriter], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Ids submitted together (with a long interval) cost one comparison build, after the
        last page; one more id later waits for the interval, and ``close`` builds it at once."""
        writer = writers(root, comparison_interval_sec=3600.0)
        gate = threading.Event()
        pages = spy_on(monkeypatch, writer, "write_experiment_report", gate)
        comparisons = spy_on(monkeypatch, writer, "write_comparison_report")
        for experiment_id in IDS[:2]:
            writer.submit(experiment_id)
        gate.set()  # both are queued before the first page starts
        wait_for(lambda: len(comparisons.calls) == 1, "the comparison build")
        assert writer.pages_written == 2
        assert [Path(a[0]).name for a in pages.calls] == IDS[:2]
        assert comparison_ids(root) == set(IDS)

        writer.submit(IDS[2])
        wait_for(lambda: writer.pages_written == 3, "the third page")
        assert len(comparisons.calls) == 1  # the interval has not passed
        writer.close(timeout_sec=30)
        assert not writer._thread.is_alive()
        assert len(comparisons.calls) == 2
        assert 'href="sim-0002.report.html"' in (root / "aggregated" / "report.html").read_text()

    def test_close_finishes_queued_work(
        self, root: Path, writers: Callable[..., ReportWriter], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Everything submitted before ``close`` is written by the time it returns."""
        writer = writers(root, comparison_interval_sec=3600.0)
        gate = threading.Event()
        spy_on(monkeypatch, writer, "write_experiment_report", gate)
        for experiment_id in IDS[:2]:
            writer.submit(experiment_id)
        gate.set()
        writer.close(timeout_sec=30)
        assert not writer._thread.is_alive()
        assert writer.pages_written == 2
        assert sorted(p.name for p in (root / "aggregated").glob("*.report.html")) == [
            f"{i}.report.html" for i in IDS[:2]
        ]
        text = (root / "aggregated" / "report.html").read_text()
        assert all(f'href="{i}.report.html"' in text for i in IDS[:2])

    def test_failing_page_does_not_stop_the_thread(
        self, root: Path, writers: Callable[..., ReportWriter], caplog: pytest.LogCaptureFixture
    ) -> None:
        """An id without a folder counts a failure and is logged; the next id is still written."""
        writer = writers(root, comparison_interval_sec=0.0)
        writer.submit("no-such-experiment")
        wait_for(lambda: writer.failures == 1, "the failure")
        assert writer._thread.is_alive()
        writer.submit(IDS[0])
        wait_for(lambda: writer.pages_written == 1, "the page after the failure")
        assert (root / "aggregated" / "sim-0000.report.html").is_file()
        assert writer.failures == 1
        assert any("no-such-experiment" in r.getMessage() for r in caplog.records)

    def test_unexpected_error_does_not_stop_the_thread(
        self,
        root: Path,
        writers: Callable[..., ReportWriter],
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A bug in the report code (any exception) is logged with its traceback, counted,
        and the thread goes on with the next id."""
        writer = writers(root, comparison_interval_sec=0.0)
        real = writer._build.write_experiment_report

        def broken(directory: Path, **kwargs: Any) -> Any:
            if directory.name == IDS[0]:
                raise RuntimeError("a bug in the report")
            return real(directory, **kwargs)

        monkeypatch.setattr(writer._build, "write_experiment_report", broken)
        writer.submit(IDS[0])
        writer.submit(IDS[1])
        wait_for(lambda: writer.pages_written == 1, "the second page")
        assert writer.failures == 1
        assert writer._thread.is_alive()
        assert not (root / "aggregated" / "sim-0000.report.html").exists()
        assert any(r.exc_info and "sim-0000" in r.getMessage() for r in caplog.records)

    def test_missing_libraries(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without the report libraries the writer is refused at once, naming what to install."""
        monkeypatch.setattr("energy_ledger.report.extra.missing_libraries", lambda: ["jinja2"])
        with pytest.raises(LedgerError, match="jinja2") as info:
            ReportWriter(root)
        assert HINT in str(info.value)


@pytest.mark.usefixtures("restore_logging")
class TestWatchReportFlag:
    """``watch --report`` checks for the report libraries before the daemon starts."""

    @pytest.mark.parametrize(
        ("args", "env"),
        [(["--report"], {}), ([], {"ENERGY_LEDGER_REPORT": "1"})],
        ids=["flag", "environment"],
    )
    def test_missing_libraries_exit_2(
        self,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
        args: list[str],
        env: dict[str, str],
    ) -> None:
        """Exit 2 with the pip hint, by flag or by environment; ``run_watch`` is never called."""
        (tmp_path / "raw").mkdir()
        for key in [k for k in os.environ if k.startswith("ENERGY_LEDGER_")]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setattr("energy_ledger.report.extra.missing_libraries", lambda: ["matplotlib"])
        calls: list[WatchConfig] = []
        monkeypatch.setattr("energy_ledger.daemon.run.run_watch", recorder(calls))
        assert cli("watch", str(tmp_path), *args) == 2
        err = capsys.readouterr().err
        assert HINT in err and "matplotlib" in err and "Traceback" not in err
        assert calls == []
        assert not (tmp_path / ".energy-ledger").exists()

    @pytest.mark.parametrize(
        ("args", "env", "config"),
        [
            (["--report"], {}, ""),
            ([], {"ENERGY_LEDGER_REPORT": "yes"}, ""),
            ([], {}, "[watch]\nreport = true\n"),
        ],
        ids=["flag", "environment", "config-file"],
    )
    def test_setting_reaches_the_daemon(
        self,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        args: list[str],
        env: dict[str, str],
        config: str,
    ) -> None:
        """With the libraries there, ``report`` is set by the flag, the environment or the
        config file, and is off otherwise."""
        for key in [k for k in os.environ if k.startswith("ENERGY_LEDGER_")]:
            monkeypatch.delenv(key)
        calls: list[WatchConfig] = []
        monkeypatch.setattr("energy_ledger.daemon.run.run_watch", recorder(calls))
        assert cli("watch", str(tmp_path)) == 0
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        if config:
            (tmp_path / "watch.toml").write_text(config)
            args = [*args, "--config", str(tmp_path / "watch.toml")]
        assert cli("watch", str(tmp_path), *args) == 0
        assert [c.report for c in calls] == [False, True]


class Started:
    """A daemon process: its pid, how to stop it, and what it logged."""

    def __init__(self, proc: subprocess.Popen[bytes], log_path: Path) -> None:
        self.proc = proc
        self.log_path = log_path

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def start_daemon(
    tmp_path: Path, daemons: Callable[..., Daemon]
) -> Iterator[Callable[[str, Path], Daemon | Started]]:
    """Start a reporting daemon on a root: by the command line (``watch --report``), or by
    ``run_watch`` with ``report=True`` (a Python child). Killed at teardown."""
    children: list[subprocess.Popen[bytes]] = []

    def start(how: str, root: Path) -> Daemon | Started:
        if how == "cli":
            return daemons(root, "--report")
        log_path = tmp_path / "run-watch.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-c", RUN_WATCH, str(root)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=child_env(),
            )
        children.append(proc)
        return Started(proc, log_path)

    yield start
    for proc in children:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


@pytest.mark.slow
class TestDaemonWritesReports:
    """The daemon with reports on, as a real process."""

    @pytest.mark.parametrize("how", ["cli", "run_watch"])
    def test_pages_appear_and_sigterm_exits_0(
        self, tmp_path: Path, start_daemon: Callable[[str, Path], Daemon | Started], how: str
    ) -> None:
        """Experiments simulated while the daemon runs get their pages and a comparison page
        that names every one of them; SIGTERM then stops the daemon with exit 0."""
        root = tmp_path / "results"
        (root / "raw").mkdir(parents=True)
        daemon = start_daemon(how, root)

        def ready() -> bool:
            assert daemon.proc.poll() is None, f"daemon exited early:\n{daemon.output}"
            return (read_status(root) or {}).get("pid") == daemon.proc.pid

        wait_for(ready, "the daemon's first status file", timeout_sec=30)
        truths = simulate(root, experiments=2, processes=2, requests=20)
        ids = [t.experiment_id for t in truths]
        aggregated = root / "aggregated"
        for experiment_id in ids:
            page = aggregated / f"{experiment_id}.report.html"
            wait_for(page.exists, f"the page of {experiment_id}", timeout_sec=60)
        comparison = aggregated / "report.html"

        def names_every_id() -> bool:
            try:
                text = comparison.read_text()
            except FileNotFoundError:
                return False
            return all(f'data-experiment="{i}"' in text for i in ids)

        # A second result may wait out the daemon's comparison interval (10 s).
        wait_for(names_every_id, "a comparison page naming every experiment", timeout_sec=60)
        for experiment_id in ids:
            assert (aggregated / f"{experiment_id}.json").is_file()
            shown = (aggregated / f"{experiment_id}.report.html").read_text()
            assert experiment_id in shown and 'id="partial-badge"' not in shown
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(timeout=15) == 0, daemon.output
        assert "Traceback" not in daemon.output
