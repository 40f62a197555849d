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


def use_anonymous_gcs_credentials() -> None:
    """Makes Beam's GCS client anonymous, in this process.

    With no Application Default Credentials (none exist here), Beam asks ``google.auth``
    for them under a retry decorator: about 26 s on the first GCS call of a process, before
    falling back to an anonymous client. Marking Beam's credential cache as initialised with
    no credentials skips that and gives ``storage.Client.create_anonymous_client()``, which
    honours ``STORAGE_EMULATOR_HOST``. These are private attributes of Beam's auth module:
    that is why this lives here, in test set-up, and nowhere else. It does not reach worker
    processes (``--direct_running_mode multi_processing``): the tests run in-process.
    """
    from apache_beam.internal.gcp import auth  # pylint: disable=import-outside-toplevel

    auth._Credentials._credentials_init = True  # pylint: disable=protected-access
    auth._Credentials._credentials = None  # pylint: disable=protected-access


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
    use_anonymous_gcs_credentials()
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
