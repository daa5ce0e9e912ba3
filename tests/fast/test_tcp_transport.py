"""The TCP KV transport serves a payload only to the holder of its secret key, and a local process
that connects without speaking its protocol costs it nothing: long lines, idle and surplus
connections are cut."""
import socket
import struct
import threading
import time

import pytest
import torch

from engine.cluster.transports import TcpHandle, TransferError
from engine.cluster.transports.tcp import MAX_LINE_BYTES, TcpTransport
from engine.core.kv_cache import PagedKVCache


def sent_payload(transport: TcpTransport):
    cache = PagedKVCache(num_layers=2, num_kv_heads=3, head_dim=5, num_blocks=4, block_size=4,
                         dtype=torch.float32, device=torch.device("cpu"))
    table = []
    cache.grow(table, 6)
    cache.key.normal_()
    return transport.send(cache, table, 6), cache, table


def closed_by_server(sock: socket.socket, within: float = 5.0) -> bool:
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except (TimeoutError, socket.timeout):
        return False
    except ConnectionResetError:
        return True


def test_a_payload_goes_only_to_the_holder_of_its_key():
    transport = TcpTransport()
    try:
        sent, cache, table = sent_payload(transport)
        guess = TcpHandle(sent.handle.address, "0" * len(sent.handle.key), sent.handle.shape)
        assert len(sent.handle.key) >= 40   # 256 random bits, not a counter or a short id
        with pytest.raises(TransferError, match="no longer holds"):
            transport.open(guess, torch.float32).wait(10)
        received = transport.open(sent.handle, torch.float32)
        assert received.wait(10) and torch.equal(received.payload.key, cache.export(table, 6).key)
    finally:
        transport.close()


def test_a_line_longer_than_the_protocol_allows_is_cut_and_the_rightful_pull_still_works():
    transport = TcpTransport()
    try:
        sent, _, _ = sent_payload(transport)
        with socket.create_connection(transport.address) as sock:
            sock.sendall(b"G" * (MAX_LINE_BYTES * 40))   # no newline, far past the limit
            assert closed_by_server(sock)
        assert transport.open(sent.handle, torch.float32).wait(10)
    finally:
        transport.close()


def test_idle_and_surplus_connections_are_closed():
    transport = TcpTransport(timeout=0.5, max_connections=4)
    try:
        idle = [socket.create_connection(transport.address) for _ in range(4)]
        time.sleep(0.1)
        surplus = socket.create_connection(transport.address)
        assert closed_by_server(surplus, within=0.4)   # closed before the idle timeout: no slot free
        assert all(closed_by_server(sock) for sock in idle)   # each dropped after 0.5 s of silence
        sent, _, _ = sent_payload(transport)
        assert transport.open(sent.handle, torch.float32).wait(10)   # slots are free again
        for sock in idle + [surplus]:
            sock.close()
    finally:
        transport.close()


def test_the_pull_runs_beside_the_decode_loop_and_its_failure_surfaces_when_it_ends():
    """open() returns at once (the worker keeps stepping its decodes); the bytes, or the error, come later."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        def answer_late():
            conn, _ = server.accept()
            with conn:
                conn.recv(MAX_LINE_BYTES)
                time.sleep(1.0)
                conn.sendall(struct.pack("!q", -1))   # "I hold no such KV"
        threading.Thread(target=answer_late, daemon=True).start()
        transport = TcpTransport()
        try:
            pull = transport.open(TcpHandle(server.getsockname(), "k", (30, 6, 3, 64)), torch.float32)
            assert not pull.ready()
            with pytest.raises(TransferError, match="no longer holds"):
                pull.wait(10)
        finally:
            transport.close()
