"""A loopback socket, pulled by the decode side as RDMA reads are (the network route; 4 copies).
The sender keeps each payload until the receiver pulls it (or the router drops it). The receiver
pulls on a thread of its own, so its decode steps go on while the bytes arrive."""
from __future__ import annotations

import socket
import secrets
import socketserver
import struct
import threading
import time
from dataclasses import dataclass

import torch

from .base import Received, SendResult, TransferError, Transport, payload_shape, split_payload

MAX_LINE_BYTES = 256      # "GET <key>\n" is far shorter: a longer line is not a client of ours
MAX_CONNECTIONS = 32      # connections served at once; more are closed at once
KEY_BYTES = 32            # a payload's key is a 256-bit secret: knowing the port is not enough to read it


class _BoundedServer(socketserver.ThreadingTCPServer):
    """A thread per connection, at most `limit` of them."""
    daemon_threads = True

    def __init__(self, address, handler, limit: int):
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(limit)

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


@dataclass(frozen=True)
class TcpHandle:
    address: tuple[str, int]
    key: str
    shape: tuple[int, ...]

    def request(self, verb: str, timeout: float) -> socket.socket:
        sock = socket.create_connection(self.address, timeout=timeout)
        sock.sendall(f"{verb} {self.key}\n".encode())
        return sock

    def discard(self) -> None:
        try:
            with self.request("DROP", timeout=5.0):
                pass
        except OSError:
            pass  # the sender is gone, and its payloads with it


class TcpTransport(Transport):
    """Each payload waits under a random secret key (in the handle, which only the router and the
    decode worker see); a request line is bounded in size and time, and so are the connections."""
    name, copies = "tcp", 4

    def __init__(self, settings=None, host: str = "127.0.0.1", timeout: float = 30.0,
                 max_connections: int = MAX_CONNECTIONS):
        super().__init__(settings)
        self.timeout = timeout
        self._payloads: dict[str, bytes] = {}
        self._lock = threading.Lock()
        transport = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                self.connection.settimeout(timeout)   # an idle or slow client is dropped
                try:
                    line = self.rfile.readline(MAX_LINE_BYTES + 1)
                except OSError:
                    return
                parts = line.decode(errors="replace").split()
                if not line.endswith(b"\n") or len(parts) != 2 or parts[0] not in ("GET", "DROP"):
                    return   # not our protocol: close without reading more
                verb, key = parts
                with transport._lock:
                    data = transport._payloads.pop(key, None)
                if verb == "GET":
                    self.wfile.write(struct.pack("!q", -1 if data is None else len(data)))
                    if data is not None:
                        self.wfile.write(data)

        self._server = _BoundedServer((host, 0), Handler, max_connections)
        self.address = self._server.server_address
        threading.Thread(target=self._server.serve_forever, name="kv-tcp", daemon=True).start()

    def send(self, cache, block_table, num_tokens):
        start = time.perf_counter()
        payload = cache.export(block_table, num_tokens)
        key = secrets.token_urlsafe(KEY_BYTES)
        flat = torch.cat([payload.key.reshape(-1), payload.value.reshape(-1)]).view(torch.uint8)
        data = flat.cpu().numpy().tobytes()   # from a GPU pool: one copy down to the host
        with self._lock:
            self._payloads[key] = data
        handle = TcpHandle(tuple(self.address), key, payload_shape(cache, num_tokens))
        return SendResult(handle, len(data), start, time.perf_counter() - start)

    def open(self, handle: TcpHandle, dtype) -> Pull:
        return Pull(handle, dtype, self.timeout)

    def close(self):
        self._server.shutdown()
        self._server.server_close()


class Pull(Received):
    """A payload being pulled on its own thread; ready() says when it is in."""

    def __init__(self, handle: TcpHandle, dtype, timeout: float):
        super().__init__(None)
        self._error: TransferError | None = None
        self._done = threading.Event()
        threading.Thread(target=self._pull, args=(handle, dtype, timeout), name="kv-tcp-pull", daemon=True).start()

    def _pull(self, handle: TcpHandle, dtype, timeout: float) -> None:
        try:
            self.payload = split_payload(torch.frombuffer(_fetch(handle, timeout), dtype=dtype), handle.shape)
        except TransferError as exc:
            self._error = exc
            handle.discard()   # whatever the sender still holds
        finally:
            self._done.set()

    def ready(self) -> bool:
        if not self._done.is_set():
            return False
        if self._error is not None:
            raise self._error
        return True

    def wait(self, seconds: float) -> bool:
        """ready(), after waiting up to `seconds` for the pull to end."""
        self._done.wait(seconds)
        return self.ready()


def _fetch(handle: TcpHandle, timeout: float) -> bytearray:
    try:
        with handle.request("GET", timeout) as sock:
            f = sock.makefile("rb")
            (size,) = struct.unpack("!q", f.read(8))
            if size < 0:
                raise TransferError(f"sender no longer holds KV {handle.key}")
            data = bytearray(size)
            if f.readinto(data) != size:
                raise TransferError("connection closed before the whole KV arrived")
    except OSError as exc:
        raise TransferError(f"KV fetch from {handle.address} failed: {exc}") from exc
    return data
