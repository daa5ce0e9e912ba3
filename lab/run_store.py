"""Recorded runs as plain files: one folder per run with tokens.csv, requests.csv and summary.json."""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pandas as pd

from .interference import RunResult, relative_injections, save_result


class RunStore:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def save(self, result: RunResult, name: str = "", target: dict | None = None) -> Path:
        """A new folder named by the time and `name` (or the run's label)."""
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        folder = self.folder / f"{stamp}-{_slug(name or result.label)}"
        return save_result(result, folder, {"name": name or result.label, "target": target,
                                            "injections": relative_injections(result)})

    def names(self) -> list[str]:
        """Saved runs, newest first."""
        if not self.folder.exists():
            return []
        return sorted((p.name for p in self.folder.iterdir() if (p / "summary.json").exists()), reverse=True)

    def load(self, name: str) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
        """(tokens, requests, summary) of a saved run."""
        folder = self.folder / name
        return (pd.read_csv(folder / "tokens.csv"), pd.read_csv(folder / "requests.csv"),
                json.loads((folder / "summary.json").read_text()))


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")[:60] or "run"
