"""Short notices between workers of one host, beside the router: a writer tells a reservation that it
has written everything ("ready") or will write no more ("stop"), as NIXL's notifications do.

Each board is a Unix datagram socket in Linux's abstract namespace: no file to remove, and it is gone
when its process is.
"""
from __future__ import annotations

import socket
import uuid

READY, STOP = b"ready:", b"stop:"   # writer -> reservation: every layer is in place / no more writes


class NoticeBoard:
    def __init__(self):
        self.address = f"\0pdlab-kv-notices-{uuid.uuid4().hex}"
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(self.address)
        self._socket.setblocking(False)

    def drain(self) -> list[bytes]:
        messages = []
        while True:
            try:
                messages.append(self._socket.recv(65536))
            except BlockingIOError:
                return messages

    def close(self) -> None:
        self._socket.close()


class Poster:
    def __init__(self):
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.settimeout(1.0)   # a reader whose queue is full is stuck or gone: never wait longer

    def post(self, address: str, message: bytes) -> bool:
        """False if nobody reads that board any more (its process is gone)."""
        try:
            self._socket.sendto(message, address)
        except OSError:
            return False
        return True

    def close(self) -> None:
        self._socket.close()
