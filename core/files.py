"""Durable files: fsync a folder's files and the folder itself, so a rename that publishes it never exposes a
folder whose files a power loss would leave empty or truncated (the rename can reach the disk before the data)."""
from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(directory: str | os.PathLike) -> None:
    """Flush a folder's entries (names created, renamed or removed in it) to disk."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(directory: str | os.PathLike) -> None:
    """fsync every file under ``directory``, then every folder (deepest first), ``directory`` last."""
    folders = []
    for root, _, names in os.walk(directory):
        folders.append(root)
        for name in names:
            path = Path(root, name)
            if path.is_symlink():
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    for folder in reversed(folders):
        fsync_dir(folder)
