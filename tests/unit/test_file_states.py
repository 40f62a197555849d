"""What a file's stat can vouch for: its filesystem (from the mount table), and its settling."""

import os
import time

from beam_etl import file_states

MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 253:1 / / rw,relatime - ext4 /dev/vda rw
40 27 0:45 / /mnt/shared rw,relatime - nfs4 server:/export rw,vers=4.2
41 27 7:0 / /mnt/dataset rw,relatime shared:5 - squashfs /dev/loop0 ro
42 27 0:50 / /mnt/s3 rw,nosuid - fuse.s3fs s3fs rw
43 27 0:51 / /mnt/with\\040space rw - tmpfs tmpfs rw
"""


def _state(device: int, age_s: float = 10.0) -> tuple[int, ...]:
    old = time.time_ns() - int(age_s * 1e9)
    return (100, old, old, 7, device)


def test_only_filesystems_that_keep_their_own_change_times_are_trusted(tmp_path):
    table = tmp_path / "mountinfo"
    table.write_text(MOUNTINFO)
    kinds = {(253, 1): "ext4", (0, 45): "nfs4", (7, 0): "squashfs", (0, 50): "fuse.s3fs", (0, 51): "tmpfs",
             (0, 21): "proc", (8, 3): None}
    for (major, minor), kind in kinds.items():
        device = os.makedev(major, minor)
        assert file_states.filesystem_type(device, str(table)) == kind
        assert file_states.trusted(device, str(table)) == (kind in ("ext4", "tmpfs"))
    assert file_states.filesystem_type(os.makedev(253, 1), str(tmp_path / "no such table")) is None
    here = os.stat(__file__)  # this machine's own table names the tests' filesystem
    assert file_states.filesystem_type(here.st_dev) is not None


def test_a_file_settles_once_its_times_are_old_enough():
    now = time.time_ns()
    assert file_states.settled(now - 3_000_000_000, now)
    assert not file_states.settled(now - 1_000_000_000, now)  # changed lately
    assert not file_states.settled(now + 10**12, now)  # a time in the future
