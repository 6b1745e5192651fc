"""Network filesystem detection from the mount table."""

from __future__ import annotations

from pathlib import Path

import pytest

from energy_ledger.daemon.fsdetect import (
    filesystem_type,
    fs_type_of,
    is_network_fs_type,
    needs_polling,
    parse_mounts,
)

MOUNTS = """\
/dev/sda1 / ext4 rw,relatime 0 0
server:/export /mnt/results nfs4 rw,vers=4.2 0 0
lustre@o2ib:/fs /lustre lustre rw 0 0
sshfs#me@host: /home/me/remote fuse.sshfs rw 0 0
tmpfs /mnt/results/scratch tmpfs rw 0 0
//nas/share /mnt/with\\040space cifs rw 0 0
/dev/sdb1 /data/fuseblk fuseblk rw 0 0
garbage
"""


class TestMountTable:
    """The longest mount point holding a path decides its type."""

    @pytest.mark.parametrize(
        ("path", "expected"),
        [
            ("/home/user", "ext4"),
            ("/", "ext4"),
            ("/mnt/results", "nfs4"),
            ("/mnt/results/run-1/raw", "nfs4"),
            ("/mnt/resultsX", "ext4"),
            ("/mnt/results/scratch/x", "tmpfs"),
            ("/lustre/project", "lustre"),
            ("/home/me/remote/a", "fuse.sshfs"),
            ("/mnt/with space/raw", "cifs"),
        ],
    )
    def test_fs_type_of(self, path: str, expected: str) -> None:
        """Each path maps to the type of its deepest mount point."""
        assert fs_type_of(path, parse_mounts(MOUNTS)) == expected

    def test_malformed_lines_are_skipped(self) -> None:
        """A line with too few fields is ignored."""
        assert len(parse_mounts(MOUNTS)) == 7

    def test_later_mount_on_same_point_wins(self) -> None:
        """A mount stacked on the same point hides the earlier one."""
        mounts = parse_mounts("a /x ext4 rw 0 0\nb /x nfs rw 0 0\n")
        assert fs_type_of("/x/y", mounts) == "nfs"


class TestNetworkTypes:
    """Which types need polling."""

    @pytest.mark.parametrize(
        ("fs_type", "network"),
        [
            ("nfs", True),
            ("nfs4", True),
            ("lustre", True),
            ("gpfs", True),
            ("cifs", True),
            ("smb3", True),
            ("ceph", True),
            ("fuse.sshfs", True),
            ("fuse.gcsfuse", True),
            ("ext4", False),
            ("xfs", False),
            ("tmpfs", False),
            ("overlay", False),
            ("fuseblk", False),
            (None, False),
        ],
    )
    def test_is_network_fs_type(self, fs_type: str | None, network: bool) -> None:
        """Network and FUSE types poll; local ones use inotify."""
        assert is_network_fs_type(fs_type) is network

    def test_reads_a_mount_file(self, tmp_path: Path) -> None:
        """``needs_polling`` reads the given mount table."""
        table = tmp_path / "mounts"
        table.write_text(f"/dev/sda1 / ext4 rw 0 0\nsrv:/e {tmp_path} nfs rw 0 0\n")
        assert filesystem_type(tmp_path / "raw", table) == "nfs"
        assert needs_polling(tmp_path, table)

    def test_unreadable_mount_table_means_local(self, tmp_path: Path) -> None:
        """Without a mount table the type is unknown and inotify is used."""
        assert filesystem_type(tmp_path, tmp_path / "missing") is None
        assert not needs_polling(tmp_path, tmp_path / "missing")
