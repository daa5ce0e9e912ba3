"""Which device and dtype an engine runs on, and which CPU cores it may use."""
from __future__ import annotations

import os

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asked for, but no CUDA GPU is available; use 'cpu' or 'auto'")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} GPU(s) exist")
    elif device.type != "cpu":
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        # bf16 halves memory traffic on GPUs; on CPU fp32 keeps greedy output exact.
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise ValueError(f"dtype must be auto or one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[name]


def describe_device(device: torch.device) -> str:
    """What a learner needs to know of a worker's device: its threads and cores, or the GPU's name."""
    if device.type == "cpu":
        return f"{torch.get_num_threads()} threads on cores {available_cores()}"
    return torch.cuda.get_device_name(device)


def available_cores() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def place_on_cpu_cores(threads: int | None, cores: tuple[int, ...] | None) -> None:
    """Pin this process to `cores` and give torch `threads` threads (one per core by default)."""
    if cores:
        allowed = set(available_cores())
        missing = sorted(set(cores) - allowed)
        if missing:
            raise ValueError(f"CPU cores {missing} are not available; this process may use {sorted(allowed)}")
        os.sched_setaffinity(0, set(cores))
        threads = threads or len(cores)
    if threads:
        torch.set_num_threads(threads)
