"""A run's checkpoint files: each written whole (temp file, then rename) with a latest.txt marker, so a
killed run resumes from a complete file. Shared by the on-policy and off-policy runners. And the run
directory's lock: one writer at a time."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import torch

MARKER = "latest.txt"

P = ParamSpec("P")
C = TypeVar("C")
R = TypeVar("R")


@contextlib.contextmanager
def run_dir_lock(run_dir: Path) -> Iterator[None]:
    """Refuse a second writer: two resumes of one run would interleave their checkpoints and stage times.

    flock on the directory itself, not a pid file: the kernel drops it when the holder dies, even by
    SIGKILL, so a crashed run leaves no stale lock, and the directory gains no file. A directory made here
    for a run that then wrote nothing (a resume of a run that is not there) is removed again."""
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FileExistsError(
                f"another process is training in {run_dir} (`pgrep -af 'robotrl train'` finds it): wait for "
                "it to finish, or stop it (Ctrl-C or kill -INT; its last checkpoint is kept) and then resume "
                "with --resume"
            ) from None
        yield
    finally:
        os.close(fd)  # releases the lock
        if created:
            with contextlib.suppress(OSError):  # not empty: the run wrote into it
                run_dir.rmdir()


def one_writer(train: Callable[Concatenate[C, Path, P], R]) -> Callable[Concatenate[C, Path, P], R]:
    """`train(config, run_dir, ...)` holding run_dir's lock throughout."""

    @functools.wraps(train)
    def locked(config: C, run_dir: Path, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with run_dir_lock(Path(run_dir)):
            return train(config, run_dir, *args, **kwargs)

    return locked


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
