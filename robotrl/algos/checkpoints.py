"""A run's checkpoint files: each written whole (temp file, then rename) with a latest.txt marker, so a
killed run resumes from a complete file. Shared by the on-policy and off-policy runners."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

MARKER = "latest.txt"


def latest_checkpoint(directory: Path) -> Path | None:
    marker = directory / MARKER
    if not marker.is_file():
        return None
    path = directory / marker.read_text().strip()
    return path if path.is_file() else None


def write_checkpoint(directory: Path, name: str, state: dict[str, Any], keep_previous: bool = True) -> Path:
    """Write `state` as directory/name and point the marker at it; drop the previous one unless kept."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    previous = latest_checkpoint(directory)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # never leave a half-written checkpoint behind
    marker_tmp = directory / (MARKER + ".tmp")
    marker_tmp.write_text(path.name)
    marker_tmp.replace(directory / MARKER)
    if not keep_previous and previous is not None and previous != path:
        previous.unlink()
    return path
