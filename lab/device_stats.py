"""What the hardware is doing: GPU use via NVML where NVIDIA GPUs exist, per-core CPU use otherwise."""
from __future__ import annotations

import psutil


def gpu_stats() -> list[dict]:
    try:
        import pynvml
        pynvml.nvmlInit()
    except Exception:  # no driver, no GPU: the CPU view is shown instead
        return []
    try:
        stats = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            util = pynvml.nvmlDeviceGetUtilizationRates(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            name = pynvml.nvmlDeviceGetName(handle)
            stats.append({"gpu": i, "name": name.decode() if isinstance(name, bytes) else name,
                          "util_pct": util.gpu, "memory_used_gib": memory.used / 2**30,
                          "memory_total_gib": memory.total / 2**30})
        return stats
    finally:
        pynvml.nvmlShutdown()


def cpu_stats() -> list[float]:
    """Per-core utilisation (%) since the previous call."""
    return psutil.cpu_percent(percpu=True)
