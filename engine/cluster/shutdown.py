"""Ending a process that owns a cluster, whatever ends it, without leaving its workers behind.

A signal's default action kills Python on the spot: no `with Cluster(...)` block exits, no worker
is stopped. Inside `exit_on_signals()`, SIGTERM (systemd, Docker, Kubernetes), SIGHUP (a closed
terminal) and SIGINT raise SystemExit instead, so every `with` and `finally` runs. (uvicorn takes
SIGTERM and SIGINT while it serves, shuts down, and re-raises them to these handlers.)
"""
from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

EXIT_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


def _exit(signum: int, frame) -> None:
    raise SystemExit(128 + signum)   # the shell's convention for "ended by signal N"


@contextmanager
def exit_on_signals() -> Iterator[None]:
    previous = {sig: signal.signal(sig, _exit) for sig in EXIT_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
