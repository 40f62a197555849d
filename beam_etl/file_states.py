"""What a local file's ``stat`` can vouch for: its state, whether it has settled, and whether
its filesystem keeps the times that make a state worth recording (standard library only: the
up-to-date check runs before Beam loads).

A file's state is its size, modification and change times (ns), inode and device. On a
filesystem that keeps them locally (:data:`TRUSTED_FILESYSTEMS`), a write changes the change
time (the kernel sets it: ``touch -d``, ``cp -p`` and ``rsync -t`` put back only the
modification time), so a file in a recorded state holds the bytes it held then, with three
cautions:

- a write in the same clock tick as the read could leave the times as they were (git's
  "racily clean" problem): a state is recorded only once the file has settled,
  :data:`SETTLE_SECONDS` old (:func:`settled`);
- elsewhere a state says less: squashfs and ISO images have no change time of their own (an
  image rebuilt with a file changed and its modification time kept looks the same), NFS
  answers ``stat`` from an attribute cache and another machine's clock, FUSE mounts say what
  their daemon says. There nothing is recorded (:func:`trusted`), and files are read;
- a write through a shared memory map sets the times only when it faults a page in for
  writing: a page written again before the kernel has saved it (on tmpfs: ever again) changes
  no time. No ``stat`` can show such a write (README.md says to run with ``--no_cache``).
"""

from __future__ import annotations

import functools
import os

SETTLE_SECONDS = 2.0  # a file changed more recently than this is not vouched for
# Filesystems that keep a change time set by this kernel on every write (Linux's names, as
# /proc/self/mountinfo gives them).
TRUSTED_FILESYSTEMS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "f2fs", "zfs", "overlay"})
_MOUNTINFO = "/proc/self/mountinfo"


def file_state(stat_result: os.stat_result) -> tuple[int, ...]:
    """``(size, mtime_ns, ctime_ns, inode, device)`` of a ``stat`` result."""
    return (stat_result.st_size, stat_result.st_mtime_ns, stat_result.st_ctime_ns, stat_result.st_ino,
            stat_result.st_dev)


def settled(changed_ns: int, now_ns: int) -> bool:
    """Whether files last changed (modified, or their inode changed) at ``changed_ns`` had
    settled by ``now_ns``: :data:`SETTLE_SECONDS` before it."""
    return now_ns - changed_ns >= SETTLE_SECONDS * 1e9


@functools.lru_cache(maxsize=None)
def _filesystem_types(mountinfo: str) -> dict[str, str]:
    """``{"major:minor": filesystem type}`` of every mount in the table ``mountinfo``."""
    types = {}
    try:
        with open(mountinfo, encoding="utf-8", errors="surrogateescape") as handle:
            for line in handle:
                fields, _, after = line.partition(" - ")
                fields, after = fields.split(), after.split()
                if len(fields) >= 3 and after:
                    types.setdefault(fields[2], after[0])
    except OSError:
        pass
    return types


def filesystem_type(device: int, mountinfo: str = _MOUNTINFO) -> str | None:
    """The type of the mounted filesystem of ``device`` (a ``st_dev``); None where the mount
    table does not name it or cannot be read (a system without ``/proc``)."""
    return _filesystem_types(mountinfo).get(f"{os.major(device)}:{os.minor(device)}")


def trusted(device: int, mountinfo: str = _MOUNTINFO) -> bool:
    """Whether the filesystem of ``device`` (a ``st_dev``) keeps states worth recording."""
    return filesystem_type(device, mountinfo) in TRUSTED_FILESYSTEMS
