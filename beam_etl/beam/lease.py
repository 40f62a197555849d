"""One writer at a time: the lease a run takes on ``--output`` at launch.

The lease is ``OUTPUT/.incomplete/lease.json``, created only if absent (``O_EXCL`` locally, an
``ifGenerationMatch=0`` upload on ``gs://``), holding who took it and when. It is also the
marker that the folder is a beam-etl output being written. A second run finds it and refuses,
naming the holder. A lease whose run is gone (on this host: its process and those it started
no longer run; elsewhere, where they cannot be seen: it is older than ``--lease_timeout_hours``)
is stale, and is broken only with ``--break_lease``; but a lease whose run is dead (its workers
ended with its process, and that process no longer runs on this host) is taken over by a run of
the same command without asking: that is a resume (:func:`is_resumable`).
The commit checks that the lease is still its own before it touches the output.

The same kind of lease locks a folder for one process at a time (:func:`take_lock`: the prune of
a cache of outcomes), broken when its holder is gone.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import socket
import time
import uuid

from beam_etl.beam import filesystem
from beam_etl.processes import is_running
from beam_etl.output_layout import BROKEN_SUFFIX, LEASE, join


class LeaseError(ValueError):
    """The output is leased by another run, or this run's lease was lost."""


@dataclasses.dataclass(frozen=True)
class Holder:
    run_id: str
    host: str
    pid: int
    process_start: str  # the process's start time where the OS tells it: a PID can be reused
    started: float  # seconds since the epoch
    # Whether the run's workers end with its process (the DirectRunner's, a Dask cluster the
    # run started): then its process gone means the run is gone. Not so for a job on Dataflow.
    local: bool = False
    command: str = ""  # the hash of the run's flags (:func:`command_hash`)
    pid_ns: str = ""  # the process's PID namespace: its pid means something only in the same one
    took_over: str = ""  # the run whose lease this one broke or resumed, if any

    def describe(self) -> str:
        when = datetime.datetime.fromtimestamp(self.started, datetime.timezone.utc)
        return (f"run {self.run_id} (pid {self.pid} on {self.host}, "
                f"since {when:%Y-%m-%d %H:%M:%S} UTC)")


def _process_start(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]  # field 22: start time in ticks
    except (OSError, IndexError):
        return ""


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def this_process(local: bool = False, command: str = "", run_id: str | None = None) -> Holder:
    return Holder(run_id=run_id or uuid.uuid4().hex, host=socket.gethostname(), pid=os.getpid(),
                  process_start=_process_start(os.getpid()), started=time.time(), local=local,
                  command=command, pid_ns=_pid_namespace())


# Set by the launcher for the processes it starts (Beam's worker processes, a Dask cluster's):
# a run's lease is resumed only when no process on this host carries its run id any more.
RUN_ENV = "BEAM_ETL_RUN_ID"


def _tagged_processes(run_id: str) -> list[int] | None:
    """The processes of this host (that this user may inspect) running with ``RUN_ENV=run_id``;
    None where that cannot be told (no ``/proc``)."""
    tag = f"{RUN_ENV}={run_id}".encode("utf-8")
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    tagged = []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                if tag in handle.read().split(b"\0"):
                    tagged.append(int(entry))
        except OSError:
            continue  # gone, or another user's
    return tagged


def command_hash(flags: dict) -> str:
    """What identifies a run's command: the hash of its flags (``JobConfig.flags()``)."""
    return hashlib.sha256(json.dumps(flags, sort_keys=True).encode("utf-8")).hexdigest()


def read_holder(output: str) -> Holder | None:
    """The lease's holder; None if there is no lease. An unreadable lease is held by ``?``."""
    return _read_lease(output)[0]


def _read_lease(output: str) -> tuple[Holder | None, int | None]:
    """The lease's holder (:func:`read_holder`), and on ``gs://`` the generation of the lease
    object it was read from (None where it was not read): a delete of that lease deletes that
    generation only, never a lease another run made since (:func:`filesystem.delete_version`)."""
    return _read_at(join(output, LEASE))


def _read_at(path: str) -> tuple[Holder | None, int | None]:
    """:func:`_read_lease` of the file ``path``."""
    generation = None
    try:
        text, generation = filesystem.read_version(path)
        data = json.loads(text)
        return Holder(**{field.name: data[field.name] if field.default is dataclasses.MISSING
                         else data.get(field.name, field.default) for field in dataclasses.fields(Holder)}), generation
    except Exception:  # pylint: disable=broad-except  # missing, truncated, or not ours
        if not filesystem.exists(path):
            return None, None
        try:  # (a run killed between creating it and writing it): as old as the file
            started = filesystem.modified(path)
        except Exception:  # pylint: disable=broad-except  # gone meanwhile
            return None, None
        return Holder(run_id="?", host="?", pid=0, process_start="", started=started), generation


def is_stale(holder: Holder, timeout_hours: float) -> bool:
    """Whether the holder is gone. A run of this host (in this PID namespace) is gone once its
    process and every process it started are; however old, a run whose process still runs is
    not. A run elsewhere cannot be seen from here: it counts as gone once its lease is older
    than ``timeout_hours``."""
    if _seen_from_here(holder):  # (where the processes it started cannot be listed: its own)
        return _process_gone(holder) and not _tagged_processes(holder.run_id)
    return time.time() - holder.started > timeout_hours * 3600


def _seen_from_here(holder: Holder) -> bool:
    """Whether ``holder``'s process can be looked up from here: this host, and this PID
    namespace (a lease written before leases named theirs: this host's)."""
    return holder.host == socket.gethostname() and (not holder.pid_ns or holder.pid_ns == _pid_namespace())


def is_resumable(holder: Holder | None, command: str) -> bool:
    """Whether a run of ``command`` may take ``holder``'s lease over without ``--break_lease``:
    the holder ran the same command, on this host and in this PID namespace (a container
    sharing the host's name has pids of its own), its workers end with it, its process is gone,
    and so is every process it started (a worker process can outlive a killed launcher: a
    cold one until its connection to the runner times out, a forked one about a second). A job
    on Dataflow may commit after its launcher died: never."""
    return (holder is not None and holder.local and bool(command) and holder.command == command
            and bool(holder.pid_ns) and holder.pid_ns == _pid_namespace()
            and _process_gone(holder) and _tagged_processes(holder.run_id) == [])  # (None: cannot tell)


def _process_gone(holder: Holder) -> bool:
    """Whether ``holder``'s process is gone from this host (False for another host's)."""
    if holder.host != socket.gethostname():
        return False
    if not is_running(holder.pid):
        return True
    return bool(holder.process_start) and _process_start(holder.pid) != holder.process_start


def take(output: str, break_stale: bool = False, timeout_hours: float = 48.0, local: bool = False,
         command: str = "", run_id: str | None = None) -> Holder:
    """Takes the lease on ``output`` for this process (whose run is ``local``, of ``command``:
    see :class:`Holder`; ``run_id``: the run's id, if chosen already, else a new one); raises
    :class:`LeaseError` naming the holder when another run has it, unless the holder is
    resumable by ``command`` or, with ``break_stale``, stale."""
    me = this_process(local, command, run_id)
    data = json.dumps(dataclasses.asdict(me), sort_keys=True).encode("utf-8")
    path = join(output, LEASE)
    if filesystem.create_exclusive(path, data):
        return me
    holder, generation = _read_lease(output)
    if holder is None:  # released meanwhile
        if filesystem.create_exclusive(path, data):
            return me
        holder, generation = _read_lease(output)
        if holder is None:  # (taken and released again, twice: other runs are at it this moment)
            raise LeaseError(f"--output {output!r}: other runs are taking and releasing its lease this moment; "
                             "run again once they are done")
    stale = holder is not None and is_stale(holder, timeout_hours)
    if holder is not None and not (break_stale and stale) and not is_resumable(holder, command):
        what = holder.describe() if holder.run_id != "?" else f"an unreadable lease {path}"
        if stale:
            raise LeaseError(f"--output {output!r} is leased by {what}, which is no longer running; "
                             "pass --break_lease to take it over (its unfinished files are cleared)")
        if _seen_from_here(holder):
            running = [holder.pid] if not _process_gone(holder) else []
            running += [pid for pid in _tagged_processes(holder.run_id) or () if pid not in running]
            pids = f" (pid {', '.join(map(str, running))})" if running else ""
            raise LeaseError(f"--output {output!r} is leased by {what}: another run is writing there, "
                             f"and processes of it run on this host{pids}. "
                             "Wait for them to end, or stop them")
        raise LeaseError(f"--output {output!r} is leased by {what}: another run is writing there. "
                         f"Wait for it, or if it is gone for good, pass --break_lease once it is "
                         f"older than --lease_timeout_hours={timeout_hours:g}")
    _remove_stale(path, me.run_id, generation)
    me = dataclasses.replace(me, took_over=holder.run_id if holder is not None else "")
    data = json.dumps(dataclasses.asdict(me), sort_keys=True).encode("utf-8")
    if not filesystem.create_exclusive(path, data):
        raise LeaseError(f"--output {output!r}: another run took the lease while this one broke it")
    return me


def _remove_stale(path: str, breaker: str, generation: int | None) -> None:
    """Removes the stale lease at ``path``, the one read (of ``generation`` on ``gs://``), so that
    of two runs breaking it at once only one goes on. Locally by a rename to a name of this run's:
    only one rename succeeds, and the other's later create fails. On ``gs://`` by a delete of that
    generation: the other run's delete, or the lease it made since, fails that precondition."""
    if filesystem.is_local(path):
        try:
            os.rename(path, f"{path}{BROKEN_SUFFIX}{breaker}")
        except FileNotFoundError:
            raise LeaseError(f"another run broke the lease {path} first") from None
        os.remove(f"{path}{BROKEN_SUFFIX}{breaker}")
    elif generation is None:  # (its object could not be read: which one a delete would take is unknown)
        raise LeaseError(f"the lease {path} could not be read, and is not broken unread: run again, or delete it "
                         "once no run holds it")
    elif not filesystem.delete_version(path, generation):
        raise LeaseError(f"another run broke the lease {path} first")


def take_lock(path: str, timeout_hours: float = 48.0) -> Holder | None:
    """Creates the lock file ``path`` for this process, as a lease (a :class:`Holder`), and returns
    it; None while another holds it. A lock whose holder is gone (:func:`is_stale`: on this host,
    its process no longer runs; elsewhere, older than ``timeout_hours``), such as a killed
    process's, is broken and taken, by one process only where several try at once."""
    me = this_process(local=True)
    data = json.dumps(dataclasses.asdict(me), sort_keys=True).encode("utf-8")
    if filesystem.create_exclusive(path, data):
        return me
    holder, generation = _read_at(path)
    if holder is not None and not is_stale(holder, timeout_hours):
        return None
    if holder is not None:
        try:
            _remove_stale(path, me.run_id, generation)
        except LeaseError:
            return None
    return me if filesystem.create_exclusive(path, data) else None


def release_lock(path: str, holder: Holder) -> None:
    """Deletes the lock file ``path`` if ``holder`` holds it (not one another process took since)."""
    now, generation = _read_at(path)
    if now is not None and now.run_id == holder.run_id:
        filesystem.delete_version(path, generation)


def check(output: str, run_id: str) -> None:
    """Raises :class:`LeaseError` unless ``run_id`` still holds the lease on ``output``."""
    holder = read_holder(output)
    if holder is None or holder.run_id != run_id:
        now = "no run" if holder is None else holder.describe()
        raise LeaseError(f"run {run_id} lost its lease on {output!r} (now held by {now}); "
                         "the output was not touched")


def release(output: str, run_id: str) -> None:
    """Deletes the lease if ``run_id`` holds it (on ``gs://``, the lease object read: not one that
    another run made, having broken this one as stale, since)."""
    holder, generation = _read_lease(output)
    if holder is not None and holder.run_id == run_id:
        filesystem.delete_version(join(output, LEASE), generation)
