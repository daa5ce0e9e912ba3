"""Files: safetensors in a folder, optional fsync (the NVMe/SSD or 3FS route; 4 copies)."""
from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors.torch import load_file, save_file

from ...core.kv_cache import KVPayload
from .base import Received, SendResult, TransferError, Transport

if TYPE_CHECKING:
    from . import TransportSettings


KV_FOLDER_PREFIX = "pdlab-kv-"


@dataclass(frozen=True)
class DiskHandle:
    path: str

    def discard(self) -> None:
        Path(self.path).unlink(missing_ok=True)


class DiskTransport(Transport):
    """Each sender writes into a private folder of its own (mode 0700, inside `disk_folder` or the temp
    folder), removed when the transport closes: no other server or user shares it."""
    name, copies = "disk", 4

    def __init__(self, settings: TransportSettings | None = None):
        super().__init__(settings)
        parent = settings.disk_folder if settings and settings.disk_folder else tempfile.gettempdir()
        self.folder = Path(tempfile.mkdtemp(prefix=KV_FOLDER_PREFIX, dir=parent))
        self.fsync = bool(settings and settings.fsync)

    def send(self, cache, block_table, num_tokens):
        start = time.perf_counter()
        payload = cache.export(block_table, num_tokens)
        path = self.folder / f"{uuid.uuid4().hex}.safetensors"
        save_file({"key": payload.key, "value": payload.value}, str(path))
        if self.fsync:
            with open(path, "rb+") as f:
                os.fsync(f.fileno())
        return SendResult(DiskHandle(str(path)), payload.nbytes, start, time.perf_counter() - start)

    def open(self, handle: DiskHandle, dtype):
        path = Path(handle.path)
        try:
            tensors = load_file(str(path))
        except FileNotFoundError as exc:
            raise TransferError(f"KV file {path} is gone") from exc
        finally:
            path.unlink(missing_ok=True)
        return Received(KVPayload(tensors["key"], tensors["value"]))

    def close(self):
        shutil.rmtree(self.folder, ignore_errors=True)


def leaked_kv_folders() -> list[str]:
    """Private KV folders in the temp folder: none should outlive the transport that made it."""
    return sorted(p.name for p in Path(tempfile.gettempdir()).glob(KV_FOLDER_PREFIX + "*"))
