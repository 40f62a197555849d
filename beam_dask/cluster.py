"""A dask.distributed ``LocalCluster`` to run a pipeline on, with the workers' environment set
before they start."""

from __future__ import annotations

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
