"""A loopback socket, pulled by the decode side as RDMA reads are (the network route; 4 copies).
The sender keeps each payload until the receiver pulls it (or the router drops it)."""
from __future__ import annotations

import socket
import socketserver
import struct
import threading
import time
import uuid
from dataclasses import dataclass

import torch

from .base import Received, SendResult, TransferError, Transport, payload_shape, split_payload


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
    name, copies = "tcp", 4

    def __init__(self, settings=None, host: str = "127.0.0.1", timeout: float = 30.0):
        super().__init__(settings)
        self.timeout = timeout
        self._payloads: dict[str, bytes] = {}
        self._lock = threading.Lock()
        transport = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                verb, key = self.rfile.readline().decode().split()
                with transport._lock:
                    data = transport._payloads.pop(key, None)
                if verb == "GET":
                    self.wfile.write(struct.pack("!q", -1 if data is None else len(data)))
                    if data is not None:
                        self.wfile.write(data)

        self._server = socketserver.ThreadingTCPServer((host, 0), Handler)
        self._server.daemon_threads = True
        self.address = self._server.server_address
        threading.Thread(target=self._server.serve_forever, name="kv-tcp", daemon=True).start()

    def send(self, cache, block_table, num_tokens):
        start = time.perf_counter()
        payload = cache.export(block_table, num_tokens)
        key = uuid.uuid4().hex
        data = torch.cat([payload.key.reshape(-1), payload.value.reshape(-1)]).view(torch.uint8).numpy().tobytes()
        with self._lock:
            self._payloads[key] = data
        handle = TcpHandle(tuple(self.address), key, payload_shape(cache, num_tokens))
        return SendResult(handle, len(data), start, time.perf_counter() - start)

    def open(self, handle: TcpHandle, dtype):
        try:
            with handle.request("GET", self.timeout) as sock:
                f = sock.makefile("rb")
                (size,) = struct.unpack("!q", f.read(8))
                if size < 0:
                    raise TransferError(f"sender no longer holds KV {handle.key}")
                data = bytearray(size)
                if f.readinto(data) != size:
                    raise TransferError("connection closed before the whole KV arrived")
        except OSError as exc:
            raise TransferError(f"KV fetch from {handle.address} failed: {exc}") from exc
        return Received(split_payload(torch.frombuffer(data, dtype=dtype), handle.shape))

    def close(self):
        self._server.shutdown()
        self._server.server_close()
