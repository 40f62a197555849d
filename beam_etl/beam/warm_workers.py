"""Worker processes of a multi-process local run, forked from a warm parent.

Started cold, each of the DirectRunner's worker processes spends about 1.6 s importing Beam's
harness and the job's steps, and the runner starts them only once the launcher has built the
graph: on two cores that was the largest fixed cost of a run. So the launcher starts one warm
parent as it starts (:func:`start`, before its own imports, on the core its single thread leaves
idle). The parent imports all that once, then waits on a Unix socket. The worker command that
Beam runs (:mod:`beam_etl.beam.sdk_worker`) connects to it (:func:`attach`) and hands over its
environment and standard streams; the parent forks a child that runs Beam's harness with them,
and the child sends its exit status back to the command, which exits with it. To the runner
nothing differs: it started a process that runs its harness and ends when the harness ends.

Fallbacks, so a run never depends on the warm parent: with no parent (none started, gone, or
not past its imports when it died) the command runs the harness itself, as before. The parent
forks only while it has one thread (forking a threaded process is unsafe); it ends when the
launcher stops it or is gone, and a child ends when its command does. The parent carries the
run's ``BEAM_ETL_RUN_ID`` in its environment from its start, as its children do: a resume waits
for them as for any worker (:func:`beam_etl.beam.lease.is_resumable`). The parent removes its
socket as it ends; one killed along with its launcher cannot, and the next launch removes what
it left (:func:`remove_abandoned`). It waits for its children as they end, and writes down those a
signal killed (:func:`killed_workers`): a failed run names them, since to the runner a killed worker
is only a closed connection. A worker's connection closes as it dies, a moment before the kernel
reports its death, so a failed run stops the parent with ``until_workers_end``: the parent then
waits (a while at most) for its children to end before it ends, and misses no record.

Standard library only at import (:mod:`beam_etl.quick_exit` is too): the worker command imports
this module before anything else.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid

from beam_etl import quick_exit
from beam_etl.processes import is_running

SOCKET_ENV = "BEAM_ETL_WORKER_SOCKET"  # where the worker command finds the warm parent
RUN_ENV = "BEAM_ETL_RUN_ID"  # beam_etl.beam.lease.RUN_ENV (not imported: that module loads Beam)
# What the parent imports before it forks: Beam's harness and every module of the job's steps.
PRELOAD = ("apache_beam.runners.worker.sdk_worker_main", "beam_etl.beam.preprocess")
_STARTED = b"started\n"
_HEADER = struct.Struct("!I")  # the length of the JSON that follows the descriptors
_POLL_S = 0.5  # how often a waiting parent checks that the launcher still runs
_PREFIX = "beam-etl-workers-"  # the folder start() makes for its socket, in the temporary folder
_ABANDONED_AFTER_S = 10.0  # a refusing socket younger than this may be one about to listen()
_WORKERS_END_S = 3.0  # how long a parent stopped until_workers_end waits for its children
_UNTIL_WORKERS_END = signal.SIGUSR1  # the launcher's stop(until_workers_end=True), to the parent

_DEATHS = "deaths"  # in the socket's folder: a line "pid signal" per child a signal killed
_current: dict = {}  # the parent this process started: {"process", "directory", "run_id"}
_killed: list[tuple[int, int]] = []  # what the stopped parent's children were killed by


def start(verbose: bool = False, google_cloud: bool = True) -> str | None:
    """Starts the warm parent for this process's run (once); returns the run id it carries
    (the launcher's lease takes it), or None where none is started (one core). ``google_cloud``:
    whether it loads Beam with its Google Cloud clients (:mod:`beam_etl.beam.lean_import`)."""
    if _current:
        return _current["run_id"]
    if (os.cpu_count() or 1) < 2:
        return None
    remove_abandoned(tempfile.gettempdir())
    directory = tempfile.mkdtemp(prefix=_PREFIX)
    path = os.path.join(directory, "socket")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)  # connections wait here until the parent has imported what it needs
    run_id = uuid.uuid4().hex
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "beam_etl.beam.warm_workers", str(listener.fileno()), str(os.getpid()),
             "1" if verbose else "0", "1" if google_cloud else "0"],
            pass_fds=[listener.fileno()], stdin=subprocess.DEVNULL, env={**os.environ, RUN_ENV: run_id})
    except OSError:
        listener.close()
        shutil.rmtree(directory, ignore_errors=True)
        return None
    listener.close()  # the parent's copy is the only one left: if it dies, connecting fails at once
    _current.update(process=process, directory=directory, run_id=run_id)
    os.environ[SOCKET_ENV] = path
    atexit.register(stop)
    return run_id


def run_id() -> str | None:
    """The run id the warm parent carries (None: none is running)."""
    return _current.get("run_id")


def killed_workers() -> list[tuple[int, int]]:
    """``(pid, signal)`` of each worker process forked from the parent of this process's last
    run (:func:`start`) that a signal killed (the kernel's out-of-memory killer sends SIGKILL),
    its parent running or stopped."""
    if not _current:
        return list(_killed)
    return _read_deaths(os.path.join(_current["directory"], _DEATHS))


def forget_killed() -> None:
    """Forgets the killed workers of an earlier run (a run that starts no parent has none)."""
    _killed.clear()


def _read_deaths(path: str) -> list[tuple[int, int]]:
    try:
        with open(path, encoding="ascii", errors="replace") as deaths:
            lines = deaths.read().splitlines()
    except OSError:
        return []
    return [(int(fields[0]), int(fields[1])) for fields in (line.split() for line in lines)
            if len(fields) == 2 and fields[0].isdigit() and fields[1].isdigit()]


def stop(until_workers_end: bool = False) -> None:
    """Ends the warm parent (the workers it forked run on until their runner lets them go),
    keeping its record of killed workers (:func:`killed_workers`). ``until_workers_end`` (a run
    that failed, whose killed workers are to be named): the parent first waits, a few seconds at
    most, for its children to end, so that a worker whose death the runner saw is written down."""
    if not _current:
        return
    process = _current["process"]
    if process.poll() is None:
        # (either way it waits for its ended children first: their record is whole)
        process.send_signal(_UNTIL_WORKERS_END if until_workers_end else signal.SIGTERM)
        try:
            process.wait(timeout=5 + (_WORKERS_END_S if until_workers_end else 0))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    _killed[:] = killed_workers()
    shutil.rmtree(_current["directory"], ignore_errors=True)
    os.environ.pop(SOCKET_ENV, None)
    _current.clear()


def attach() -> int | None:
    """In a worker command: has the warm parent run Beam's harness in a child with this
    process's environment and standard streams; returns the child's exit status, or None when
    there is no parent to do it (the command then runs the harness itself)."""
    path = os.environ.get(SOCKET_ENV)
    if not path:
        return None
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(path)
        payload = json.dumps({"env": dict(os.environ)}).encode("utf-8")
        socket.send_fds(connection, [_HEADER.pack(len(payload))], [0, 1, 2])
        connection.sendall(payload)
        replies = connection.makefile("rb")
        if replies.readline() != _STARTED:
            return None  # the parent went away before forking
        status = replies.readline()
    except OSError:
        return None
    finally:
        connection.close()
    try:
        return int(status)
    except ValueError:
        return 1  # the child died without a word (killed)


def _receive(connection: socket.socket) -> tuple[dict, list[int]]:
    header, fds, _, _ = socket.recv_fds(connection, _HEADER.size, 3)
    if len(header) != _HEADER.size or len(fds) != 3:
        for fd in fds:
            os.close(fd)
        raise OSError("not a worker command's request")
    (length,) = _HEADER.unpack(header)
    payload = b""
    while len(payload) < length:
        chunk = connection.recv(length - len(payload))
        if not chunk:
            raise OSError("the worker command went away")
        payload += chunk
    return json.loads(payload)["env"], fds


def _exit_when_closed(connection: socket.socket) -> None:
    """In a child: its command sends nothing more, so the end of the stream means it is gone."""
    try:
        connection.recv(1)
    finally:
        os._exit(1)  # pylint: disable=protected-access


def _exit_when_launcher_gone(launcher: tuple[int, int | None]) -> None:
    """In a child: the launcher's runner is the only one its harness works for, so once the
    launcher is gone (killed alone, its worker commands left running) the child ends, and with
    it its command, rather than wait minutes for the runner's connection to time out while the
    output's next run is refused for processes of this one."""
    pid, pidfd = launcher
    if pidfd is not None:
        select.select([pidfd], [], [])  # (readable once the launcher has ended)
    else:
        while is_running(pid):
            time.sleep(_POLL_S)
    os._exit(1)  # pylint: disable=protected-access


def _pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when process ``pid`` ends (Linux 5.3 on); None elsewhere."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _child(listener: socket.socket, connection: socket.socket, env: dict, fds: list[int], verbose: bool,
           launcher: tuple[int, int | None]) -> None:
    status = 1
    try:
        listener.close()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(_UNTIL_WORKERS_END, signal.SIG_DFL)  # (the parent's stop, not a worker's)
        for target, fd in zip((0, 1, 2), fds):
            os.dup2(fd, target)
            os.close(fd)
        os.environ.clear()
        os.environ.update(env)
        connection.settimeout(None)
        connection.sendall(_STARTED)  # (before the line below: one who reads it knows the command has it)
        if verbose:
            print(f"beam-etl: worker process {os.getpid()} forked from the warm parent {os.getppid()}",
                  file=sys.stderr, flush=True)
        threading.Thread(target=_exit_when_closed, args=(connection,), name="beam_etl_command", daemon=True).start()
        threading.Thread(target=_exit_when_launcher_gone, args=(launcher,), name="beam_etl_launcher",
                         daemon=True).start()
        from beam_etl.beam import sdk_worker  # pylint: disable=import-outside-toplevel

        status = sdk_worker.run_harness()
        connection.sendall(f"{status}\n".encode("ascii"))
    except BaseException:  # pylint: disable=broad-except  # told on the worker's stderr, as a cold one would
        traceback.print_exc()
    finally:
        quick_exit.end(status)


def preload(google_cloud: bool = True) -> None:
    """Imports :data:`PRELOAD` (Beam through :func:`beam_etl.beam.lean_import.import_beam`)."""
    import importlib  # pylint: disable=import-outside-toplevel

    from beam_etl.beam import lean_import  # pylint: disable=import-outside-toplevel

    lean_import.import_beam(google_cloud)
    for name in PRELOAD:
        importlib.import_module(name)


def serve(listen_fd: int, launcher_pid: int, verbose: bool, google_cloud: bool = True) -> None:
    """The warm parent: imports :data:`PRELOAD`, then forks a child per worker command until the
    launcher stops it or is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is for the launcher and the workers
    preload(google_cloud)
    listener = socket.socket(fileno=listen_fd)
    deaths = os.path.join(os.path.dirname(listener.getsockname()), _DEATHS)
    signal.signal(signal.SIGCHLD, lambda *unused: _reap(deaths))
    signal.signal(signal.SIGTERM, lambda *unused: _reap_and_end(deaths))
    signal.signal(_UNTIL_WORKERS_END, lambda *unused: _reap_and_end(deaths, _WORKERS_END_S))
    listener.settimeout(_POLL_S)
    parent = os.getpid()
    try:
        _accept_until_orphaned(listener, (launcher_pid, _pidfd(launcher_pid)), verbose)
    finally:  # the launcher is gone: killed, it could not remove the socket's folder (its stop()
        # ends this process with SIGTERM, no finally run, and removes the folder itself)
        if os.getpid() == parent:  # (a forked child never gets here: it ends with os._exit)
            signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # (no record made anew in the folder removed)
            _remove_socket(listener.getsockname())


# (the parent) SIGCHLD handlers at work (nested); a stop that came meanwhile: how long it waits for children
_reaping = {"depth": 0, "end": None}


def _reap_and_end(deaths: str, within_s: float = 0.0) -> None:
    """(The parent, on its launcher's stop) the children that ended are written down before it
    ends, so that a SIGCHLD not yet handled loses no record; ``within_s``: it first waits that
    long at most for every child to end. Python may run this handler inside the SIGCHLD one,
    between its wait for a child and its record of it: then that one ends the parent once it has
    written its record."""
    if _reaping["depth"]:
        _reaping["end"] = max(_reaping["end"] or 0.0, within_s)
        return
    deadline = time.monotonic() + within_s
    while _reap(deaths) and time.monotonic() < deadline:
        time.sleep(0.01)
    os._exit(0)  # pylint: disable=protected-access


def _reap(deaths: str) -> bool:
    """(The parent, on SIGCHLD) waits for its ended children; writes to ``deaths`` those a
    signal killed, for the launcher to tell. Whether children still run."""
    _reaping["depth"] += 1
    running = False
    try:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                running = True
                break
            if os.WIFSIGNALED(status):
                with contextlib.suppress(OSError), open(deaths, "a", encoding="ascii") as record:
                    record.write(f"{pid} {os.WTERMSIG(status)}\n")
    finally:
        _reaping["depth"] -= 1
    if _reaping["end"] is not None and not _reaping["depth"]:
        within_s, _reaping["end"] = _reaping["end"], None
        _reap_and_end(deaths, within_s)
    return running


def _remove_socket(path: str) -> None:
    """Removes the socket at ``path`` and the folder :func:`start` made for it (where nothing
    else is in it): a launcher that was killed leaves them in the temporary folder otherwise."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(os.path.dirname(path), _DEATHS))
    for remove, target in ((os.unlink, path), (os.rmdir, os.path.dirname(path))):
        try:
            remove(target)
        except OSError:
            return


def remove_abandoned(temp_dir: str) -> list[str]:
    """Removes the socket folders in ``temp_dir`` whose warm parent was killed with its launcher
    (a SIGKILL to the whole process group: neither could remove it); returns their paths.

    Only what :func:`start` makes is touched: a folder of this user named ``beam-etl-workers-*``
    that holds nothing but a socket named ``socket`` (and the parent's record of killed
    workers), which refuses a connection (nothing listens
    on it) and is older than :data:`_ABANDONED_AFTER_S` (a socket just bound, not yet listening,
    refuses too). A live parent takes the probe as a request that is not a worker command's and
    drops it. (A temporary folder shared by several hosts is not a case it tells apart: another
    host's live socket refuses too, and that run's workers then start cold.)"""
    removed = []
    try:
        names = [name for name in os.listdir(temp_dir) if name.startswith(_PREFIX)]
    except OSError:
        return removed
    for name in names:
        directory = os.path.join(temp_dir, name)
        path = os.path.join(directory, "socket")
        try:
            folder = os.lstat(directory)
            if not stat.S_ISDIR(folder.st_mode) or folder.st_uid != os.getuid() \
                    or sorted(os.listdir(directory)) not in (["socket"], [_DEATHS, "socket"]):
                continue  # (a link is not followed)
            state = os.lstat(path)
        except OSError:
            continue
        if not stat.S_ISSOCK(state.st_mode) or time.time() - state.st_mtime < _ABANDONED_AFTER_S:
            continue
        if _refuses(path):
            _remove_socket(path)
            if not os.path.exists(directory):
                removed.append(directory)
    return removed


def _refuses(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)  # a live parent with a full backlog answers EAGAIN, not a wait
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    finally:
        probe.close()
    return False


def _accept_until_orphaned(listener: socket.socket, launcher: tuple[int, int | None], verbose: bool) -> None:
    while os.getppid() == launcher[0]:
        try:
            connection, _ = listener.accept()
        except socket.timeout:
            continue
        try:
            connection.settimeout(10)
            env, fds = _receive(connection)
        except (OSError, ValueError, KeyError):
            connection.close()
            continue
        if threading.active_count() > 1:  # never fork a threaded process: the command runs cold
            for fd in fds:
                os.close(fd)
            connection.close()
            continue
        if os.fork() == 0:
            _child(listener, connection, env, fds, verbose, launcher)
        for fd in fds:
            os.close(fd)
        connection.close()


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4] == "1")
