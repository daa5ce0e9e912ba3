"""Save a run as plain files: one row per request, per token, per step, plus what was run."""
from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path

from .sequence import RequestRecord, StepRecord

REQUEST_FIELDS = ["request_id", "worker", "prompt_tokens", "output_tokens", "arrival", "scheduled",
                  "first_token", "finish", "finish_reason", "error", "preemptions"]


def save_run(folder: str | Path, requests: list[RequestRecord], steps: list[StepRecord], meta: dict) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "requests.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(REQUEST_FIELDS)
        for r in requests:
            w.writerow([getattr(r, name) for name in REQUEST_FIELDS])
    with open(folder / "tokens.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["request_id", "index", "time"])
        for r in requests:
            w.writerows((r.request_id, i, t) for i, t in enumerate(r.token_times))
    with open(folder / "steps.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(list(StepRecord.__dataclass_fields__))
        w.writerows(list(asdict(s).values()) for s in steps)
    (folder / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
    return folder
