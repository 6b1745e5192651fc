"""The lease: one daemon per root, across hosts, with takeover of dead holders."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from energy_ledger.daemon.lease import (
    Lease,
    LeaseHeldError,
    LeaseInfo,
    LeaseLostError,
    holder_is_dead,
    read_lease,
)


def write_holder(state_dir: Path, **changes: object) -> LeaseInfo:
    """Write a lease as if another daemon held it; ``changes`` override its fields."""
    info = dataclasses.replace(Lease(state_dir, 30.0).info, **changes)  # type: ignore[arg-type]
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "lease.json").write_bytes(info.to_bytes())
    return info


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


class TestAcquire:
    """Taking the lease, and refusing it while a live daemon holds it."""

    def test_first_daemon_takes_it(self, tmp_path: Path) -> None:
        """An empty state folder: the lease is created with this host and pid."""
        lease = Lease(tmp_path, 30.0)
        lease.acquire()
        info = read_lease(tmp_path / "lease.json")
        assert info is not None and info.pid == os.getpid() and info.token == lease.info.token

    def test_live_holder_refuses(self, tmp_path: Path) -> None:
        """A second lease on the same folder is refused with the holder named."""
        Lease(tmp_path, 30.0).acquire()
        with pytest.raises(LeaseHeldError, match=f"pid {os.getpid()}"):
            Lease(tmp_path, 30.0).acquire()

    def test_dead_local_holder_taken_over_at_once(self, tmp_path: Path) -> None:
        """Same host, process gone: taken over without waiting for the timeout."""
        write_holder(tmp_path, pid=dead_pid(), token="old")
        lease = Lease(tmp_path, 3600.0)
        lease.acquire()
        assert read_lease(tmp_path / "lease.json").token == lease.info.token  # type: ignore[union-attr]

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
            assert holder_is_dead(info, 30.0) is not None
        finally:
            proc.wait()

    def test_reused_pid_is_dead(self, tmp_path: Path) -> None:
        """Our own pid with another start time: the holder's process is gone."""
        info = write_holder(tmp_path, pid_start=1)
        assert "another process" in (holder_is_dead(info, 30.0) or "")

    def test_other_host_fresh_heartbeat_refuses(self, tmp_path: Path) -> None:
        """Another host's holder is alive while its heartbeat is younger than the timeout."""
        write_holder(tmp_path, host="node-7", heartbeat_t=time.time() - 5)
        with pytest.raises(LeaseHeldError, match="host node-7"):
            Lease(tmp_path, 30.0).acquire()

    def test_other_host_old_heartbeat_taken_over(self, tmp_path: Path) -> None:
        """Another host's holder silent for longer than the timeout is presumed dead."""
        write_holder(tmp_path, host="node-7", heartbeat_t=time.time() - 31)
        lease = Lease(tmp_path, 30.0)
        lease.acquire()
        assert lease.held

    def test_unreadable_lease_judged_by_age(self, tmp_path: Path) -> None:
        """A garbled lease is respected while fresh and taken over once old."""
        path = tmp_path / "lease.json"
        path.write_bytes(b"{torn")
        with pytest.raises(LeaseHeldError, match="cannot be read"):
            Lease(tmp_path, 30.0).acquire()
        old = time.time() - 60
        os.utime(path, (old, old))
        Lease(tmp_path, 30.0).acquire()

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
        assert final is not None and final.token in {w.info.token for w in winners}
        for lease in winners:
            if lease.info.token != final.token:
                with pytest.raises(LeaseLostError):
                    lease.renew()


class TestHeartbeat:
    """Renewal and release."""

    def test_renew_moves_the_heartbeat(self, tmp_path: Path) -> None:
        """renew() writes a newer heartbeat under the same token."""
        lease = Lease(tmp_path, 30.0)
        lease.acquire()
        before = read_lease(lease.path)
        time.sleep(0.01)
        lease.renew()
        after = read_lease(lease.path)
        assert before is not None and after is not None
        assert after.heartbeat_t > before.heartbeat_t and after.token == before.token

    def test_renew_after_takeover_raises(self, tmp_path: Path) -> None:
        """A daemon whose lease was taken over learns it at its next heartbeat."""
        lease = Lease(tmp_path, 30.0)
        lease.acquire()
        write_holder(tmp_path, host="node-9", token="usurper")
        with pytest.raises(LeaseLostError, match="node-9"):
            lease.renew()
        assert not lease.held

    def test_release_removes_only_its_own(self, tmp_path: Path) -> None:
        """release() deletes the file when it is ours, and leaves another's alone."""
        lease = Lease(tmp_path, 30.0)
        lease.acquire()
        lease.release()
        assert not lease.path.exists()
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
        assert read_lease(lease.path).token == lease.info.token  # type: ignore[union-attr]
