"""``[SCHEME://]HOST:PORT`` addresses of the services a command connects to (a Dask scheduler, a
tf.data service dispatcher): read from a flag, and asked whether anything answers there before
anything is touched. Their clients would otherwise wait: dask's for its timeout after the output's
lease is taken, TensorFlow's for ever."""

from __future__ import annotations

import re
import socket

CONNECT_TIMEOUT_S = 10.0
_ADDRESS = re.compile(r"(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):([0-9]{1,5})")


def parse(text: str, scheme: str) -> tuple[str, int]:
    """``(host, port)`` of ``[scheme://]HOST:PORT`` (an IPv6 host in brackets); ValueError for
    anything else."""
    matched = _ADDRESS.fullmatch(text.removeprefix(f"{scheme}://"))
    if not matched or not 1 <= int(matched[2]) <= 65535:
        raise ValueError(f"expected [{scheme}://]HOST:PORT, a port within [1, 65535]")
    return matched[1].strip("[]"), int(matched[2])


def refusal(host: str, port: int, timeout_s: float = CONNECT_TIMEOUT_S) -> str | None:
    """Why no connection to ``host:port`` can be made, or None where one can. (Whether what
    answers is the service, its own client finds.)"""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except OSError as error:
        return error.strerror or str(error) or type(error).__name__
