"""Reading an inbox queue (the engine loop's thread, a worker process): everything queued now, having
waited a little for the first message when there is nothing else to do."""
from __future__ import annotations

import queue


def drain(inbox, wait_s: float = 0.0) -> list:
    """Every message in `inbox` (a queue.Queue or a multiprocessing queue); waits up to `wait_s` for one."""
    try:
        messages = [inbox.get(timeout=wait_s) if wait_s > 0 else inbox.get_nowait()]
    except queue.Empty:
        return []
    while True:
        try:
            messages.append(inbox.get_nowait())
        except queue.Empty:
            return messages
