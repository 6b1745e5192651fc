"""Fault injection: the daemon is ``kill -9``-ed over a hundred times while experiments complete.

Each round starts a fresh daemon on the same root, feeds the root (one experiment's logs, the
previous one's markers), and kills the daemon at a moment chosen by the round: at random (before
or after it is ready), or right after a new result file, CSV row, emission record or hook effect
appears. In the hook-effect rounds the hooks' supervisors are killed too (as when the whole
service is killed), so that hook runs really are interrupted. A last daemon then catches up
undisturbed. The test counts what happened and holds it to the promises in docs/watcher.md:
every complete experiment emitted once, no finished hook run again, interrupted hooks within
``hook_max_attempts``, no output torn.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import random
import re
import signal
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from energy_ledger.simulate import simulate
from tests.daemon.procs import Daemon, hook_runs, hooks_finished, markers, records, state_dir
from tests.helpers import read_status, wait_for

ROUNDS = 104
EXPERIMENTS = ROUNDS - 1
"""Every round completes one experiment (its markers arrive) and starts the next (its logs)."""
MAX_ATTEMPTS = 3
EVENT_WAIT_SEC = 3.0
"""How long a round waits for the event it kills on; if none comes, it kills anyway."""

TRIGGERS = ("random-early", "random-ready", "result", "csv-row", "record", "hook-effect")


def _count_files(folder: Path, suffix: str) -> int:
    try:
        return sum(1 for e in os.scandir(folder) if e.name.endswith(suffix) and e.name[0] != ".")
    except FileNotFoundError:
        return 0


def _count_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _probes(root: Path, hook_log: Path) -> dict[str, Callable[[], int]]:
    """For each event trigger, a counter that grows when such an event appears."""
    return {
        "result": lambda: _count_files(root / "aggregated", ".json"),
        "csv-row": lambda: _count_lines(root / "aggregated" / "results.csv"),
        "record": lambda: _count_files(state_dir(root) / "emitted", ".json"),
        "hook-effect": lambda: _count_lines(hook_log),
    }


def _kill_when(
    daemon: Daemon,
    trigger: str,
    probe: Callable[[], int] | None,
    before: int,
    rng: random.Random,
) -> str:
    """Kill ``daemon`` at the moment ``trigger`` asks for; return what the kill followed.

    An event trigger kills as soon as ``probe`` counts more than ``before`` (counted before the
    daemon started, so that events of its start-up count too).
    """
    if trigger == "random-early":
        time.sleep(rng.uniform(0.0, 0.6))
    elif trigger == "random-ready":
        daemon.wait_ready()
        time.sleep(rng.uniform(0.0, 0.3))
    else:
        assert probe is not None
        deadline = time.monotonic() + EVENT_WAIT_SEC
        while probe() == before:
            if time.monotonic() > deadline:
                daemon.kill9()
                return "nothing-came"
            time.sleep(0.002)
    daemon.kill9()
    return trigger


def _kill_supervisors(root: Path) -> int:
    """SIGKILL every live hook supervisor named in an attempt marker; return how many."""
    killed = 0
    for marker in (state_dir(root) / "emitted").glob("*@attempt-*"):
        try:
            pid = int(json.loads(marker.read_bytes())["supervisor"]["pid"])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if b"supervise.py" in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
    return killed


def _feed(stage: Path, root: Path, ids: list[str], n: int) -> None:
    """Round ``n``: move experiment n's logs into the root, and experiment n-1's markers."""
    if n < len(ids):
        (root / "raw" / ids[n]).mkdir()
        for log in sorted((stage / "raw" / ids[n]).glob("*.events.jsonl")):
            os.rename(log, root / "raw" / ids[n] / log.name)
    if 0 < n <= len(ids):
        for marker in sorted((stage / "raw" / ids[n - 1]).glob("*.done")):
            os.rename(marker, root / "raw" / ids[n - 1] / marker.name)


@pytest.mark.slow
class TestKill9:
    """A hundred kills at the worst moments; the promises hold, as counted figures."""

    def test_exactly_once_under_kill9(
        self,
        tmp_path: Path,
        daemons: Callable[..., Daemon],
        hook_cmd: str,
        hook_log: Path,
    ) -> None:
        """Every experiment emitted once, no done hook rerun, reruns bounded, nothing torn."""
        seed = int(os.environ.get("WATCH_KILL_SEED", time.time_ns() % 10_000))
        rng = random.Random(seed)
        stage, root = tmp_path / "stage", tmp_path / "root"
        truths = simulate(stage, experiments=EXPERIMENTS, processes=2, requests=8, prefix="kx")
        ids = [t.experiment_id for t in truths]
        (root / "raw").mkdir(parents=True)
        probes = _probes(root, hook_log)
        flags = ["--on-emit", hook_cmd, "--lease-timeout", "30"]
        env = {"ENERGY_LEDGER_HOOK_MAX_ATTEMPTS": str(MAX_ATTEMPTS), "HOOK_SLEEP": "0.05"}
        kills: Counter[str] = Counter()
        for n in range(ROUNDS):
            trigger = TRIGGERS[n % len(TRIGGERS)]
            probe = probes.get(trigger)
            before = probe() if probe is not None else 0
            daemon = daemons(root, *flags, *(["--polling"] * (n % 2)), **env)
            _feed(stage, root, ids, n)
            kills[_kill_when(daemon, trigger, probe, before, rng)] += 1
            if trigger == "hook-effect":
                kills["supervisors"] += _kill_supervisors(root)
            daemon.close()
        _feed(stage, root, ids, ROUNDS)
        assert not any((stage / "raw").glob("*/*")), "every experiment was fed"
        final = daemons(root, *flags, **env)
        final.wait_ready()
        wait_for(
            lambda: len(records(root)) == EXPERIMENTS and len(hooks_finished(root)) == EXPERIMENTS,
            f"every experiment emitted and its hook finished (seed {seed})",
            timeout_sec=60,
        )
        wait_for(
            lambda: all(r.ended for runs in hook_runs(hook_log).values() for r in runs),
            "hooks started by killed daemons to end",
            timeout_sec=10,
        )
        assert final.terminate() == 0
        self._check(root, tmp_path, hook_log, truths, kills, seed)

    def _check(
        self,
        root: Path,
        logs: Path,
        hook_log: Path,
        truths: Sequence[Any],
        kills: Counter[str],
        seed: int,
    ) -> None:
        where = f"(seed {seed}, kills {dict(kills)})"
        # Nothing torn: every output and every state file parses.
        results = {p.stem: json.loads(p.read_bytes()) for p in (root / "aggregated").glob("*.json")}
        rows = list(csv.DictReader(io.StringIO((root / "aggregated" / "results.csv").read_text())))
        recs = records(root)
        json.loads((state_dir(root) / "status.json").read_bytes())
        assert not list((state_dir(root) / "emitted").glob(".*.tmp")), "stray temp files"
        # Every complete experiment emitted, with its true figures, exactly once.
        expected = {t.experiment_id: t.total_tokens for t in truths}
        assert {k: r["total_tokens"] for k, r in results.items()} == expected, where
        assert sorted(r["experiment_id"] for r in rows) == sorted(expected), where
        assert set(recs) == set(expected), where
        emitted_lines: Counter[str] = Counter()
        emission_ids: dict[str, set[str]] = {}
        for log in logs.glob("daemon-*.log"):
            for m in re.finditer(r"emitted (\S+) \(emission (\w+)\)", log.read_text()):
                emitted_lines[m[1]] += 1
                emission_ids.setdefault(m[1], set()).add(m[2])
        assert max(emitted_lines.values()) == 1, f"an experiment emitted twice {where}"
        assert all(ids == {recs[k]["emission_id"]} for k, ids in emission_ids.items()), where
        # Hooks: never after done, one emission id, attempts claimed once, within the bound.
        runs = hook_runs(hook_log)
        assert set(runs) <= set(expected), where
        reruns = given_up = 0
        for key, its_runs in runs.items():
            assert not any(r.after_done for r in its_runs), f"{key}: hook ran after done {where}"
            assert {r.emission_id for r in its_runs} == {recs[key]["emission_id"]}, where
            attempts = [r.attempt for r in its_runs]
            assert len(attempts) == len(set(attempts)) <= MAX_ATTEMPTS, f"{key}: {attempts}"
            state = markers(root, key)
            started = {int(m.split("-")[1]) for m in state if m.startswith("attempt-")}
            assert set(attempts) <= started, f"{key}: a run without its claimed attempt"
            if "failed" in state:
                given_up += 1
                assert len(started) == MAX_ATTEMPTS and "done" not in state, f"{key}: {state}"
            else:
                assert "done" in state, f"{key}: {state}"
            reruns += len(its_runs) - 1
        print(  # the figures the report quotes (pytest -s shows them)
            f"\nfault test {where}: {ROUNDS} daemon kills, {len(recs)} emissions, "
            f"{sum(len(r) for r in runs.values())} hook runs ({reruns} reruns of interrupted "
            f"runs, {given_up} hooks given up at the bound of {MAX_ATTEMPTS}), "
            f"{sum(emitted_lines.values())} 'emitted' log lines"
        )
        assert sum(kills[t] for t in (*TRIGGERS, "nothing-came")) == ROUNDS >= 100
        # A daemon's death alone never reruns a hook: only a supervisor killed with it does.
        assert reruns <= kills["supervisors"], where
        assert all(kills[t] > 0 for t in ("result", "csv-row", "record", "hook-effect")), where
        assert read_status(root) is not None
