"""Beam's Dask runner with the fixes a tf.Transform job needs, apart from any one job.

``--runner beam_dask.DaskRunner --dask_client_address HOST:PORT`` runs a Beam pipeline on a
dask.distributed cluster: the same translation of the pipeline into ``dask.bag`` operations as
Apache Beam 2.77's ``apache_beam.runners.dask.dask_runner.DaskRunner``, with twelve fixes, each
listed in this package's README.md with what was wrong, what it does, the test that shows it
and the private Beam APIs it leans on. :func:`local_cluster` starts a cluster on this machine.
"""

from beam_dask.cluster import local_cluster
from beam_dask.runner import DaskRunner

__all__ = ["DaskRunner", "local_cluster"]
