"""Local servers that stand in for Google Cloud in tests, and every test-only adjustment needed
to reach them. Nothing in beam_etl/ or pipelines/ knows about them.

Cloud Storage: ``gcp-storage-emulator`` (pure Python, in-process, in memory) on a free
loopback port. Beam's GCS client honours ``STORAGE_EMULATOR_HOST`` once it uses anonymous
credentials (see :func:`use_anonymous_gcs_credentials`).

Not reachable this way: TensorFlow's own GCS filesystem (``tf.io.gfile``, ``TFRecordDataset``
on ``gs://``) hard-codes Google's endpoints and honours no emulator variable, so tf.Transform's
output and the loader are not exercised on ``gs://`` here (see the issue notes).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import socket

from apache_beam.io.filesystems import FileSystems


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def use_anonymous_credentials() -> None:
    """Makes Beam's Google clients (GCS and BigQuery) anonymous, in this process.

    With no Application Default Credentials (none exist here), Beam asks ``google.auth`` for
    them under a retry decorator: about 26 s on the first GCS call of a process before it falls
    back to an anonymous client, and for BigQuery its apitools client may then start an
    interactive OAuth flow and hang. Filling Beam's credential cache with anonymous credentials
    skips all that; the GCS client then honours ``STORAGE_EMULATOR_HOST``. These are private
    attributes of Beam's auth module: that is why this lives here, in test set-up, and nowhere
    else. It does not reach worker processes (``--direct_running_mode multi_processing``): the
    tests run in-process.
    """
    # pylint: disable=import-outside-toplevel,protected-access
    from apache_beam.internal.gcp import auth
    from google.auth.credentials import AnonymousCredentials

    auth._Credentials._credentials_init = True
    auth._Credentials._credentials = auth._ApitoolsCredentialsAdapter(AnonymousCredentials())


@contextlib.contextmanager
def gcs_emulator():
    """A Cloud Storage emulator on a free port; yields its endpoint while it runs."""
    from gcp_storage_emulator.server import create_server  # pylint: disable=import-outside-toplevel

    # It logs a warning for every response it sends as a string rather than a stream.
    logging.getLogger("gcp_storage_emulator").setLevel(logging.ERROR)
    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"  # the scheme is required
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = endpoint
    use_anonymous_credentials()
    try:
        yield endpoint
    finally:
        server.stop()
        if previous is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = previous


def create_bucket(name: str) -> None:
    from google.cloud import storage  # pylint: disable=import-outside-toplevel

    storage.Client.create_anonymous_client().create_bucket(name)


def upload_tree(local_dir: pathlib.Path, prefix: str) -> list[str]:
    """Copies every file under ``local_dir`` to ``prefix`` (``gs://bucket/path``) through Beam."""
    uris = []
    for path in sorted(local_dir.rglob("*")):
        if path.is_file():
            uri = f"{prefix}/{path.relative_to(local_dir).as_posix()}"
            with FileSystems.create(uri) as handle:
                handle.write(path.read_bytes())
            uris.append(uri)
    return uris


def read_bytes(uri: str) -> bytes:
    with FileSystems.open(uri) as handle:
        return handle.read()


def list_objects(prefix: str) -> list[str]:
    return sorted(m.path for m in FileSystems.match([f"{prefix}/**"])[0].metadata_list)


# --- BigQuery ----------------------------------------------------------------------------------

BIGQUERY_PROJECT = "test-project"


def _patch_bigquery_emulator() -> None:
    """Fixes three bugs of bqemulator 1.4.0 that Beam's BigQuery IO runs into. Idempotent.

    - It exits at start when it cannot download DuckDB's ``spatial`` extension (no network
      here); that extension only serves GEOGRAPHY, which no test uses: skip it.
    - ``datasets.list`` ignores its ``filter``: Beam's DIRECT_READ clean-up lists its temporary
      datasets by label and deletes every dataset it gets back, the source dataset included.
    - A query job never creates its ``destinationTable``: Beam runs a query into a temporary
      table and then reads that table, which was missing (404).
    """
    # pylint: disable=import-outside-toplevel,protected-access
    from fastapi import Query
    from bqemulator.api.routes import datasets, jobs
    from bqemulator.storage import engine

    if getattr(jobs, "_beam_etl_patched", False):
        return
    engine.DuckDBEngine._load_spatial = lambda self: None

    list_datasets = datasets.list_datasets

    def list_datasets_filtered(project_id: str, ctx: datasets._Ctx,
                               maxResults: int = Query(default=1000, alias="maxResults"),  # noqa: N803
                               filter: str | None = Query(default=None)):  # noqa: A002  # the API's name
        result = list_datasets(project_id, ctx, maxResults)
        if filter:  # "labels.KEY:VALUE labels.KEY2:VALUE2"
            wanted = dict(term.removeprefix("labels.").split(":", 1) for term in filter.split())
            result["datasets"] = [d for d in result["datasets"]
                                  if all(d.get("labels", {}).get(k) == v for k, v in wanted.items())]
            result["totalItems"] = len(result["datasets"])
        return result

    # This module's annotations are strings (``from __future__ import annotations``), which
    # FastAPI would resolve in this module's namespace: give it the objects.
    list_datasets_filtered.__annotations__ = {"project_id": str, "ctx": datasets._Ctx,
                                              "maxResults": int, "filter": str | None}
    path = datasets.router.prefix + "/projects/{project_id}/datasets"
    datasets.router.routes[:] = [route for route in datasets.router.routes
                                 if not (route.path == path and "GET" in route.methods)]
    datasets.router.add_api_route("/projects/{project_id}/datasets", list_datasets_filtered,
                                  methods=["GET"])

    execute = jobs._execute_query_or_failed_meta

    async def execute_into_destination(*, project_id, job_id, bq_sql, query_params, query_config,
                                       ctx, caller, **kwargs):
        meta = await execute(project_id=project_id, job_id=job_id, bq_sql=bq_sql,
                             query_params=query_params, query_config=query_config, ctx=ctx,
                             caller=caller, **kwargs)
        destination = query_config.get("destinationTable")
        if destination:
            project = destination.get("projectId") or project_id
            if ctx.catalog.get_table(project, destination["datasetId"], destination["tableId"]) is None:
                table = f"`{project}.{destination['datasetId']}.{destination['tableId']}`"
                await jobs.execute_query_job(project_id, f"{job_id}_destination",
                                             f"CREATE TABLE {table} AS {bq_sql}", query_params, ctx,
                                             caller=caller)
        return meta

    jobs._execute_query_or_failed_meta = execute_into_destination
    jobs._beam_etl_patched = True


def point_beam_at_bigquery(rest_url: str, grpc_endpoint: str) -> None:
    """Sends Beam's BigQuery clients, in this process, to the emulator, anonymously.

    Beam's ``ReadFromBigQuery`` has no endpoint option: its apitools client's ``BASE_URL`` is a
    class constant, and DIRECT_READ builds ``BigQueryReadClient()`` with no arguments. Both are
    replaced here.
    """
    # pylint: disable=import-outside-toplevel,protected-access
    import grpc
    from apache_beam.io.gcp import bigquery as beam_bigquery
    from apache_beam.io.gcp.internal.clients.bigquery import bigquery_v2_client
    from google.cloud.bigquery_storage_v1.services.big_query_read.transports import (
        BigQueryReadGrpcTransport)

    use_anonymous_credentials()
    bigquery_v2_client.BigqueryV2.BASE_URL = f"{rest_url}/bigquery/v2/"
    read_client = beam_bigquery.bq_storage.BigQueryReadClient
    if not hasattr(read_client, "_beam_etl_original"):
        original = read_client

        def emulator_read_client(*args, **kwargs):
            channel = grpc.insecure_channel(grpc_endpoint.removeprefix("http://"))
            return original(transport=BigQueryReadGrpcTransport(channel=channel))

        emulator_read_client._beam_etl_original = original
        beam_bigquery.bq_storage.BigQueryReadClient = emulator_read_client


@contextlib.contextmanager
def bigquery_emulator():
    """A BigQuery emulator (REST and Storage Read gRPC) on free ports, in this process, with
    Beam pointed at it; yields a ``google.cloud.bigquery.Client`` for setting up tables."""
    # pylint: disable=import-outside-toplevel
    from bqemulator.config import PersistenceMode, Settings
    from bqemulator.testing._thread_runner import ThreadedEmulator
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    _patch_bigquery_emulator()
    settings = Settings(persistence_mode=PersistenceMode.EPHEMERAL, rest_host="127.0.0.1",
                        rest_port=free_port(), grpc_host="127.0.0.1", grpc_port=free_port(),
                        default_project_id=BIGQUERY_PROJECT, log_level="error")
    emulator = ThreadedEmulator(settings)
    try:
        emulator.start()
        point_beam_at_bigquery(emulator.server.rest_url, emulator.server.grpc_endpoint)
        yield bigquery.Client(project=BIGQUERY_PROJECT, credentials=AnonymousCredentials(),
                              client_options={"api_endpoint": emulator.server.rest_url})
    finally:
        emulator.stop()
