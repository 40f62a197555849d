"""Local servers that stand in for Google Cloud in tests, and every test-only adjustment needed
to reach them. Nothing in beam_etl/ or pipelines/ knows about them.

Cloud Storage: ``gcp-storage-emulator`` (pure Python, in memory, in its own process) on a free
loopback port. Beam's GCS client honours ``STORAGE_EMULATOR_HOST`` once it uses anonymous
credentials (see :func:`use_anonymous_credentials`).

TensorFlow's own GCS filesystem (``tf.io.gfile``, ``TFRecordDataset`` and tf.Transform on
``gs://``) hard-codes Google's endpoints and honours no emulator variable: it reaches the same
emulator through a local TLS proxy with a test CA (:func:`tensorflow_gcs_through_proxy`). A
store's passing faults (a 503, say) come from a proxy in front of the emulator that answers
requests for one object with an error status (:func:`failing_gcs_proxy`).

BigQuery: ``bqemulator`` (DuckDB-backed, REST and Storage Read gRPC), with three
of its bugs patched (:func:`_patch_bigquery_emulator`) and Beam's clients pointed at it
(:func:`point_beam_at_bigquery`).

Every server runs in its own process (``python -m tests.support.emulators SERVER``), started and
stopped by a context manager here.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

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


def _wait_for_port(port: int, process: subprocess.Popen | None, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited at start with status {process.returncode}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    if process is not None:
        process.kill()
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout} s")


@contextlib.contextmanager
def _server_process(command: list[str], port: int, what: str):
    """Runs ``command`` (a server listening on ``port``) until the block ends.

    Servers run in their own process, not in a thread of the test's: TensorFlow holds the GIL
    during some file operations (``TFRecordWriter.close``), and a server thread waiting for
    that GIL would never answer the very request TensorFlow is blocked on.
    """
    process = subprocess.Popen(command, cwd=pathlib.Path(__file__).resolve().parents[2],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_port(port, process, what)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@contextlib.contextmanager
def gcs_emulator():
    """A Cloud Storage emulator (in memory) on a free port; yields its endpoint while it runs."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"  # the scheme is required
    command = [sys.executable, "-m", "tests.support.emulators", "gcs", "--port", str(port)]
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    with _server_process(command, port, "gcp-storage-emulator"):
        os.environ["STORAGE_EMULATOR_HOST"] = endpoint
        use_anonymous_credentials()
        try:
            yield endpoint
        finally:
            if previous is None:
                os.environ.pop("STORAGE_EMULATOR_HOST", None)
            else:
                os.environ["STORAGE_EMULATOR_HOST"] = previous


@contextlib.contextmanager
def failing_gcs_proxy(emulator: str, object_name: str, status: int, times: int | None = None):
    """A proxy in front of the Cloud Storage ``emulator``, in this process, that answers the first
    ``times`` requests (None: all) naming ``object_name`` with ``status`` and forwards the rest;
    ``STORAGE_EMULATOR_HOST`` points at it while the block runs. Yields the list of the statuses
    it answered that object's requests with."""
    import http.client  # pylint: disable=import-outside-toplevel
    import http.server  # pylint: disable=import-outside-toplevel

    answered = []
    target = urllib.parse.urlsplit(emulator)
    quoted = urllib.parse.quote(object_name, safe="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def _handle(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if (quoted in self.path or object_name in self.path) and (times is None or len(answered) < times):
                answered.append(status)
                message = json.dumps({"error": {"code": status, "message": "injected by the test's proxy"}})
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(message)))
                self.end_headers()
                self.wfile.write(message.encode())
                return
            if quoted in self.path or object_name in self.path:
                answered.append(200)
            connection = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
            headers = {name: value for name, value in self.headers.items() if name.lower() != "host"}
            connection.request(self.command, self.path, body=body or None, headers=headers)
            response = connection.getresponse()
            data = response.read()
            self.send_response(response.status)
            for name, value in response.getheaders():
                if name.lower() not in ("transfer-encoding", "content-length", "connection"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            connection.close()

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

        def log_message(self, *args):  # (quiet)
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield answered
    finally:
        os.environ["STORAGE_EMULATOR_HOST"] = previous if previous is not None else emulator
        server.shutdown()
        server.server_close()


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
    """A BigQuery emulator (REST and Storage Read gRPC, in memory) on free ports, in its own
    process, with Beam pointed at it; yields a ``google.cloud.bigquery.Client`` for setting up
    tables."""
    # pylint: disable=import-outside-toplevel
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    rest_port, grpc_port = free_port(), free_port()
    # (a folder of its own for the bodies of uploads, removed with it: its default is one in /tmp
    # that it never removes)
    with tempfile.TemporaryDirectory(prefix="bqemulator-uploads-") as uploads, _server_process(
            [sys.executable, "-m", "tests.support.emulators", "bigquery", "--port", str(rest_port),
             "--grpc_port", str(grpc_port), "--uploads", uploads], rest_port, "bqemulator"):
        rest_url = f"http://127.0.0.1:{rest_port}"
        _wait_for_port(grpc_port, None, "bqemulator's gRPC server")
        point_beam_at_bigquery(rest_url, f"127.0.0.1:{grpc_port}")
        yield bigquery.Client(project=BIGQUERY_PROJECT, credentials=AnonymousCredentials(),
                              client_options={"api_endpoint": rest_url})


def _serve_bigquery(port: int, grpc_port: int, uploads: str) -> None:
    # pylint: disable=import-outside-toplevel
    from bqemulator.config import LogLevel, PersistenceMode, Settings
    from bqemulator.server import run_forever

    _patch_bigquery_emulator()
    run_forever(Settings(persistence_mode=PersistenceMode.EPHEMERAL, rest_host="127.0.0.1",
                         rest_port=port, grpc_host="127.0.0.1", grpc_port=grpc_port,
                         default_project_id=BIGQUERY_PROJECT, log_level=LogLevel.ERROR,
                         upload_staging_dir=pathlib.Path(uploads)))


# --- TensorFlow's own GCS client -----------------------------------------------------------------

GOOGLE_HOSTS = ("storage.googleapis.com", "www.googleapis.com")


def _write_test_ca(directory: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path, pathlib.Path]:
    """A throw-away CA, and a certificate it signs for Google's storage hosts.

    Returns (ca.pem, server.pem, server.key). TensorFlow's curl trusts ca.pem through
    ``CURL_CA_BUNDLE``; nothing else does.
    """
    # pylint: disable=import-outside-toplevel
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "beam-etl test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    server = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, GOOGLE_HOSTS[0])]))
              .issuer_name(ca_name).public_key(server_key.public_key())
              .serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(minutes=5))
              .not_valid_after(now + datetime.timedelta(days=1))
              .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in GOOGLE_HOSTS]),
                             critical=False)
              .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                             critical=False)
              .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(server_key.private_bytes(serialization.Encoding.PEM,
                                                  serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    return paths


_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te",
               "trailer", "upgrade", "content-length", "host", "expect"}


def _read_body(reader, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks = []
        while True:
            size = int(reader.readline().split(b";")[0].strip(), 16)
            if size == 0:
                while reader.readline().strip():  # trailers
                    pass
                return b"".join(chunks)
            chunks.append(reader.read(size))
            reader.readline()
    return reader.read(int(headers.get("content-length", 0) or 0))


def _read_headers(reader) -> dict[str, str]:
    headers = {}
    while (line := reader.readline().decode("latin-1").strip()):
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return headers


class _GoogleStorageProxy:
    """An HTTPS proxy that answers TensorFlow's requests to Google's storage hosts from the
    emulator: it accepts ``CONNECT``, terminates TLS with the test CA's certificate, and
    forwards each request, in plain HTTP, to the emulator.

    Fixes on the way, each for something TensorFlow's client sends that the emulator's HTTP
    server does not take: request bodies are de-chunked (TensorFlow sends chunked uploads),
    its ``Transfer-Encoding: identity`` is dropped, and the emulator's ``Location`` headers
    (resumable upload sessions) are rewritten to the Google host the client asked for.
    ``Expect: 100-continue`` is answered at once instead of after curl's 1 s wait. TensorFlow
    asks for a bucket's ``storageLayout`` (hierarchical namespace or not) before renaming a
    "directory"; the emulator has no such endpoint, so the proxy answers: a flat bucket.
    """

    def __init__(self, emulator: str, certificate: pathlib.Path, key: pathlib.Path, port: int):
        import socketserver  # pylint: disable=import-outside-toplevel
        import ssl  # pylint: disable=import-outside-toplevel

        self._emulator = emulator.removeprefix("http://")
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(certificate, key)
        proxy = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                proxy.handle(self.connection)

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True

    def serve_forever(self):
        self._server.serve_forever()

    def handle(self, connection):
        reader = connection.makefile("rb")
        request_line = reader.readline().decode("latin-1").split(" ", 2)
        if len(request_line) != 3:  # a probe for the port, or garbage
            return
        method, target, _ = request_line
        _read_headers(reader)
        host = target.split(":")[0]
        if method != "CONNECT" or host not in GOOGLE_HOSTS:
            connection.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            return
        connection.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        with self._context.wrap_socket(connection, server_side=True) as tls:
            tls_reader = tls.makefile("rb")
            while self._forward(tls_reader, tls, host):
                pass

    def _forward(self, reader, tls, host) -> bool:
        import http.client  # pylint: disable=import-outside-toplevel

        request_line = reader.readline().decode("latin-1").strip()
        if not request_line:
            return False
        method, path, _ = request_line.split(" ", 2)
        headers = _read_headers(reader)
        if headers.get("expect", "").lower() == "100-continue":  # else curl waits 1 s for it
            tls.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = _read_body(reader, headers)
        layout = re.match(r"/storage/v1/b/([^/?]+)/storageLayout", path)
        if layout:  # asked before renaming "directories"; the emulator does not know it
            payload = json.dumps({"kind": "storage#storageLayout", "bucket": layout.group(1),
                                  "hierarchicalNamespace": {"enabled": False}}).encode()
            tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
            return True
        upstream = http.client.HTTPConnection(self._emulator, timeout=60)
        upstream.request(method, path, body=body if body or method in ("POST", "PUT") else None,
                         headers={k: v for k, v in headers.items() if k not in _HOP_BY_HOP})
        response = upstream.getresponse()
        payload = response.read()
        upstream.close()
        lines = [f"HTTP/1.1 {response.status} {response.reason}"]
        for name, value in response.getheaders():
            if name.lower() in _HOP_BY_HOP:
                continue
            if name.lower() == "location":
                value = value.replace(f"http://{self._emulator}", f"https://{host}")
            lines.append(f"{name}: {value}")
        lines.append(f"Content-Length: {len(payload)}")
        tls.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
                    + (payload if method != "HEAD" else b""))
        return headers.get("connection", "").lower() != "close"


@contextlib.contextmanager
def tensorflow_gcs_through_proxy(emulator: str, workdir: pathlib.Path):
    """Points TensorFlow's GCS filesystem (``tf.io.gfile``, ``TFRecordDataset``, tf.Transform)
    at the Cloud Storage emulator, in this process.

    TensorFlow 2.21 hard-codes ``https://storage.googleapis.com`` and
    ``https://www.googleapis.com`` and honours no emulator variable; its curl does honour
    ``https_proxy`` and ``CURL_CA_BUNDLE``. So: a local proxy with a test CA
    (:class:`_GoogleStorageProxy`), a fixed token instead of a metadata-server login
    (``GOOGLE_AUTH_TOKEN_FOR_TESTING``, ``NO_GCE_CHECK``), and loopback excluded from the proxy
    so that Beam's clients still reach the emulators directly.
    """
    ca, certificate, key = _write_test_ca(workdir)
    port = free_port()
    command = [sys.executable, "-m", "tests.support.emulators", "proxy", "--emulator", emulator,
               "--certificate", str(certificate), "--key", str(key), "--port", str(port)]
    settings = {"https_proxy": f"http://127.0.0.1:{port}", "no_proxy": "127.0.0.1,localhost",
                "CURL_CA_BUNDLE": str(ca), "NO_GCE_CHECK": "true",
                "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test-token"}
    previous = {name: os.environ.get(name) for name in settings}
    with _server_process(command, port, "the TLS proxy"):
        os.environ.update(settings)
        try:
            yield
        finally:
            for name, value in previous.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def _serve_gcs(port: int) -> None:
    """gcp-storage-emulator, in memory, with two fixes: an upload with an empty body (TensorFlow
    creates "directories" as empty objects named ``dir/``) crashed its media-upload handler,
    which takes the missing body for ``None``; and uploads, deletes and downloads ignored the
    ``ifGenerationMatch`` precondition that Cloud Storage checks, and the job's lease uses (an
    upload only if absent, ``0``; a delete, or a read, of the generation read before only)."""
    # pylint: disable=import-outside-toplevel,protected-access
    import http
    import logging

    from gcp_storage_emulator.exceptions import NotFound
    from gcp_storage_emulator.handlers import objects

    def unless_it_exists(upload, name_of):
        def checked(request, response, storage):
            if request.query.get("ifGenerationMatch") == ["0"]:
                try:
                    storage.get_file_obj(request.params["bucket_name"], name_of(request))
                except NotFound:
                    pass
                else:
                    response.status = http.HTTPStatus.PRECONDITION_FAILED
                    response.json({"error": {"code": 412, "message": "conditionNotMet"}})
                    return None
            return upload(request, response, storage)
        return checked

    media_upload = objects._media_upload

    def media_upload_allowing_empty(request, response, storage):
        if request.data is None:
            request._data = b""
        return media_upload(request, response, storage)

    def of_the_generation(handler):
        def checked(request, response, storage, *args, **kwargs):
            wanted = request.query.get("ifGenerationMatch")
            if wanted:
                try:
                    there = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
                except NotFound:
                    pass  # (the handler answers 404)
                else:
                    if there["generation"] != wanted[0]:
                        response.status = http.HTTPStatus.PRECONDITION_FAILED
                        response.json({"error": {"code": 412, "message": "conditionNotMet"}})
                        return None
            return handler(request, response, storage, *args, **kwargs)
        return checked

    for name in ("delete", "download"):
        setattr(objects, name, of_the_generation(getattr(objects, name)))
    objects._media_upload = unless_it_exists(media_upload_allowing_empty,
                                             lambda request: request.query["name"][0])
    objects._multipart_upload = unless_it_exists(
        objects._multipart_upload,
        lambda request: request.query.get("name", [None])[0] or request.data["meta"].get("name"))
    from gcp_storage_emulator.server import create_server  # (its routes take the handlers as it loads)

    # It logs a warning for every response it sends as a string rather than a stream.
    logging.getLogger("gcp_storage_emulator").setLevel(logging.ERROR)
    create_server("127.0.0.1", port, in_memory=True).run()


def _main() -> None:
    """Runs one of the servers in this process: ``gcs`` or ``proxy`` (see their functions)."""
    parser = argparse.ArgumentParser(description="Test servers of tests/support/emulators.py.")
    commands = parser.add_subparsers(dest="server", required=True)
    gcs = commands.add_parser("gcs")
    gcs.add_argument("--port", type=int, required=True)
    bigquery = commands.add_parser("bigquery")
    bigquery.add_argument("--port", type=int, required=True)
    bigquery.add_argument("--grpc_port", type=int, required=True)
    bigquery.add_argument("--uploads", required=True)
    proxy = commands.add_parser("proxy")
    proxy.add_argument("--emulator", required=True)
    proxy.add_argument("--certificate", type=pathlib.Path, required=True)
    proxy.add_argument("--key", type=pathlib.Path, required=True)
    proxy.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    if args.server == "gcs":
        _serve_gcs(args.port)
    elif args.server == "bigquery":
        _serve_bigquery(args.port, args.grpc_port, args.uploads)
    else:
        _GoogleStorageProxy(args.emulator, args.certificate, args.key, args.port).serve_forever()


if __name__ == "__main__":
    _main()
