"""The dask.distributed clusters a pipeline runs on: a ``LocalCluster`` with the workers'
environment set before they start, and whether a scheduler answers at an address."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Mapping

import dask


def local_cluster(workers: int, environ: Mapping[str, object] | None = None):
    """A ``LocalCluster`` of ``workers`` processes with one thread each (Beam runs one bundle
    per thread). ``environ``: variables set in each worker process before it starts, e.g.
    thread-pool sizes that must be known at import time; a value of None unsets dask's own
    default for that variable (an explicit value in the launching environment still wins, as
    with dask's own settings)."""
    from distributed import LocalCluster  # pylint: disable=import-outside-toplevel  # heavy

    with dask.config.set({f"distributed.nanny.pre-spawn-environ.{name}": value
                          for name, value in (environ or {}).items()}):
        return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                            dashboard_address=":0")


HANDSHAKE_TIMEOUT_S = 30  # dask's own default for a connection (distributed.comm.timeouts.connect)


def scheduler_refusal(address: str, timeout_s=None) -> str | None:
    """Why no Dask scheduler answers at ``address`` (``tcp://`` or no scheme) within
    ``timeout_s`` (``--dask_connection_timeout``'s value: seconds, else dask's 30), as a phrase
    ("no Dask scheduler answers there (...)", "a Dask Worker answers there, not a scheduler"), or
    None where one does, or where ``address`` is of another scheme (``tls://``, ``ucx://``: dask's
    own to reach). dask's client waits for ever for the handshake of a service that accepts
    its connection and never answers as Dask does; this asks the service who it is under a
    deadline, on a thread of its own (the caller may be running an event loop: a notebook)."""
    if "://" in address and not address.startswith("tcp://"):
        return None
    from distributed.comm import connect  # pylint: disable=import-outside-toplevel  # heavy

    address = address if "://" in address else f"tcp://{address}"
    timeout_s = timeout_s if isinstance(timeout_s, (int, float)) and timeout_s > 0 else HANDSHAKE_TIMEOUT_S

    async def identity():
        comm = await connect(address, timeout=timeout_s)
        try:
            await comm.write({"op": "identity", "reply": True})
            return await comm.read()
        finally:
            comm.abort()

    try:
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="beam_dask_identity") as pool:
            answer = pool.submit(lambda: asyncio.run(asyncio.wait_for(identity(), timeout_s))).result()
    except asyncio.TimeoutError:
        return f"no Dask scheduler answers there (nothing answered Dask's handshake within {timeout_s:g} s)"
    except Exception as error:  # pylint: disable=broad-except  # what a service that is not Dask's sends
        return f"no Dask scheduler answers there ({type(error).__name__}: {error})"
    kind = answer.get("type") if isinstance(answer, dict) else None
    if kind == "Scheduler":
        return None
    return f"a Dask {kind} answers there, not a scheduler" if isinstance(kind, str) else \
        f"no Dask scheduler answers there (it answered {str(answer)[:80]!r})"
