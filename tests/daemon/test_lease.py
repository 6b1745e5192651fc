"""The lease: one daemon per root, across hosts, taken over only from holders known to be dead."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from energy_ledger.daemon.lease import (
    Heartbeat,
    Lease,
    LeaseHeldError,
    LeaseInfo,
    LeaseLostError,
    heartbeat_path,
    local_holder_gone,
    read_heartbeat,
    read_lease,
)


def write_holder(state_dir: Path, **changes: object) -> LeaseInfo:
    """Write a lease as if another daemon held it; ``changes`` override its fields."""
    info = dataclasses.replace(Lease(state_dir, 30.0).info, **changes)  # type: ignore[arg-type]
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "lease.json").write_bytes(info.to_bytes())
    return info


def beat(state_dir: Path, token: str, seq: int, t: float = 0.0) -> None:
    """Write the heartbeat of ``token``'s holder."""
    heartbeat_path(state_dir, token).write_bytes(Heartbeat(token, seq, t).to_bytes())


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


class FakeClock:
    """A monotonic clock that moves only when the lease sleeps (a contender's own clock)."""

    def __init__(self, on_sleep: Callable[[int], object] | None = None) -> None:
        self.now = 1000.0
        self.sleeps = 0
        self.on_sleep = on_sleep

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.sleeps += 1
        if self.on_sleep is not None:
            self.on_sleep(self.sleeps)


class TestAcquire:
    """Taking the lease, and refusing it while a live daemon holds it."""

    def test_first_daemon_takes_it(self, tmp_path: Path) -> None:
        """An empty state folder: the lease names this host and pid, and a heartbeat exists."""
        lease = Lease(tmp_path, 30.0)
        lease.acquire()
        info = read_lease(tmp_path / "lease.json")
        assert info is not None and info.pid == os.getpid() and info.token == lease.token
        heartbeat = read_heartbeat(tmp_path, lease.token)
        assert heartbeat is not None and (heartbeat.token, heartbeat.seq) == (lease.token, 1)

    def test_live_holder_refuses(self, tmp_path: Path) -> None:
        """A second lease on the same folder is refused with the holder named."""
        Lease(tmp_path, 30.0).acquire()
        with pytest.raises(LeaseHeldError, match=f"pid {os.getpid()}"):
            Lease(tmp_path, 30.0).acquire()

    def test_dead_local_holder_taken_over_at_once(self, tmp_path: Path) -> None:
        """Same host, process gone: taken over without waiting, and its heartbeat removed."""
        write_holder(tmp_path, pid=dead_pid(), token="old")
        beat(tmp_path, "old", 7)
        clock = FakeClock()
        lease = Lease(tmp_path, 3600.0, clock=clock, sleep=clock.sleep)
        lease.acquire()
        assert read_lease(tmp_path / "lease.json").token == lease.token  # type: ignore[union-attr]
        assert clock.sleeps == 0
        assert not heartbeat_path(tmp_path, "old").exists()

    def test_zombie_holder_is_dead(self, tmp_path: Path) -> None:
        """A holder that exited but was not reaped yet counts as dead."""
        proc = subprocess.Popen([sys.executable, "-c", "pass"])
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                stat = Path(f"/proc/{proc.pid}/stat").read_text()
                if stat.rsplit(")", 1)[1].split()[0] == "Z":
                    break
                time.sleep(0.02)
            info = write_holder(tmp_path, pid=proc.pid, pid_start=None)
            assert local_holder_gone(info) is not None
        finally:
            proc.wait()

    def test_reused_pid_is_dead(self, tmp_path: Path) -> None:
        """Our own pid with another start time: the holder's process is gone."""
        info = write_holder(tmp_path, pid_start=1)
        assert "another process" in (local_holder_gone(info) or "")

    def test_other_host_with_a_moving_heartbeat_refuses(self, tmp_path: Path) -> None:
        """A holder elsewhere whose heartbeat moves while we watch is alive, whatever its clock."""
        holder = write_holder(tmp_path, host="node-7", token="alive")
        beat(tmp_path, "alive", 1, t=0.0)  # a wall clock far in the past: never compared
        clock = FakeClock(on_sleep=lambda n: n == 3 and beat(tmp_path, "alive", 2, t=0.0))
        with pytest.raises(LeaseHeldError, match=r"host node-7.*heartbeat is moving"):
            Lease(tmp_path, 30.0, clock=clock, sleep=clock.sleep).acquire()
        assert read_lease(tmp_path / "lease.json") == holder
        assert clock.now - 1000.0 < 30.0

    def test_other_host_standing_still_for_the_timeout_is_taken_over(self, tmp_path: Path) -> None:
        """Neither lease nor heartbeat changed for one timeout on our own clock: taken over."""
        write_holder(tmp_path, host="node-7", token="gone")
        beat(tmp_path, "gone", 5, t=time.time() + 10_000)  # its clock far ahead: irrelevant
        clock = FakeClock()
        lease = Lease(tmp_path, 30.0, clock=clock, sleep=clock.sleep)
        lease.acquire()
        assert lease.held and clock.now - 1000.0 >= 30.0
        assert read_lease(tmp_path / "lease.json").token == lease.token  # type: ignore[union-attr]

    def test_unreadable_lease_judged_by_watching_it(self, tmp_path: Path) -> None:
        """A garbled lease is taken over once it stood still for a timeout (no mtime compared)."""
        path = tmp_path / "lease.json"
        path.write_bytes(b"{torn")
        os.utime(path, (time.time() + 3600, time.time() + 3600))
        clock = FakeClock()
        lease = Lease(tmp_path, 5.0, clock=clock, sleep=clock.sleep)
        lease.acquire()
        assert lease.held and clock.now - 1000.0 >= 5.0

    def test_released_while_watching_is_taken_at_once(self, tmp_path: Path) -> None:
        """The holder stops cleanly while we watch: the lease is created without more waiting."""
        write_holder(tmp_path, host="node-7", token="leaving")
        clock = FakeClock(on_sleep=lambda n: n == 2 and (tmp_path / "lease.json").unlink())
        lease = Lease(tmp_path, 30.0, clock=clock, sleep=clock.sleep)
        lease.acquire()
        assert lease.held and clock.sleeps == 2

    def test_contenders_for_a_stale_lease_leave_one_holder(self, tmp_path: Path) -> None:
        """Eight threads take over one dead lease at once; one ends up holding it."""
        write_holder(tmp_path, pid=dead_pid(), token="dead")
        leases = [Lease(tmp_path, 30.0) for _ in range(8)]
        barrier = threading.Barrier(len(leases))

        def contend(lease: Lease) -> None:
            barrier.wait()
            with contextlib.suppress(LeaseHeldError):
                lease.acquire()

        threads = [threading.Thread(target=contend, args=(lease,)) for lease in leases]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        final = read_lease(tmp_path / "lease.json")
        winners = [lease for lease in leases if lease.held]
        assert final is not None and final.token in {w.token for w in winners}
        for lease in winners:
            if lease.token != final.token:
                with pytest.raises(LeaseLostError):
                    lease.renew()


class TestRenewal:
    """Renewal compares, then writes only the holder's own heartbeat."""

    def test_renew_moves_the_heartbeat_and_never_the_lease(self, tmp_path: Path) -> None:
        """renew() raises the heartbeat's seq; lease.json keeps its exact bytes."""
        lease = Lease(tmp_path, 30.0)
        lease.acquire()
        before = lease.path.read_bytes()
        lease.renew()
        lease.renew()
        assert read_heartbeat(tmp_path, lease.token).seq == 3  # type: ignore[union-attr]
        assert lease.path.read_bytes() == before

    def test_renew_after_takeover_raises_and_leaves_the_new_lease(self, tmp_path: Path) -> None:
        """A paused holder learns at its next renewal that it lost; the new lease is untouched."""
        lease = Lease(tmp_path, 30.0)
        lease.acquire()
        usurper = write_holder(tmp_path, host="node-9", token="usurper")
        with pytest.raises(LeaseLostError, match="node-9"):
            lease.renew()
        assert not lease.held and lease.lost
        assert read_lease(lease.path) == usurper
        with pytest.raises(LeaseLostError):
            lease.fence()

    def test_fence_renews_when_overdue(self, tmp_path: Path) -> None:
        """fence() after a long pause writes a heartbeat first; otherwise it only checks."""
        clock = FakeClock()
        lease = Lease(tmp_path, 30.0, clock=clock, sleep=clock.sleep)
        lease.acquire()
        lease.fence()
        assert read_heartbeat(tmp_path, lease.token).seq == 1  # type: ignore[union-attr]
        clock.now += 11.0
        lease.fence()
        assert read_heartbeat(tmp_path, lease.token).seq == 2  # type: ignore[union-attr]

    def test_release_removes_only_its_own(self, tmp_path: Path) -> None:
        """release() deletes lease and heartbeat when ours, and leaves another's lease alone."""
        lease = Lease(tmp_path, 30.0)
        lease.acquire()
        lease.release()
        assert not lease.path.exists() and not lease.heartbeat_file.exists()
        other = Lease(tmp_path, 30.0)
        other.acquire()
        write_holder(tmp_path, token="someone-else")
        other.release()
        assert read_lease(other.path).token == "someone-else"  # type: ignore[union-attr]

    def test_vanished_lease_is_recreated(self, tmp_path: Path) -> None:
        """A lease file deleted behind the holder's back is taken again at the next heartbeat."""
        lease = Lease(tmp_path, 30.0)
        lease.acquire()
        lease.path.unlink()
        lease.renew()
        assert read_lease(lease.path).token == lease.token  # type: ignore[union-attr]

    def test_version_1_lease_is_read(self, tmp_path: Path) -> None:
        """A lease written by an older daemon (with heartbeat_t) is still understood."""
        old = b'{"host":"h","boot_id":"b","pid":1,"pid_start":null,"token":"t","acquired_t":1.0,'
        old += b'"heartbeat_t":2.0}'
        assert LeaseInfo.from_bytes(old).token == "t"
