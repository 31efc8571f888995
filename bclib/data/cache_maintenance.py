"""What the cache folder holds (packed caches, feature files, interrupted builds), and removing what is
no longer needed. Nothing outside the cache folder is ever touched.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bclib import paths
from bclib.data.cache import COMPLETE_MARKER, LAST_USED_FILE, META_FILE

#: An unfinished build younger than this may still be running in another process.
UNFINISHED_GRACE_SECONDS = 3600.0


@dataclass(frozen=True)
class CacheEntry:
    """One item of the cache folder: a packed cache, an unfinished build or a feature file."""

    path: Path
    kind: str  # "packed" | "unfinished" | "features"
    bytes: int
    last_used: float  # seconds since the epoch
    dataset: str = ""
    image_size: int | None = None
    images: int | None = None
    source: str = ""  # the data folder a packed cache was made from
    source_exists: bool = True

    def age_days(self, now: float | None = None) -> float:
        return ((time.time() if now is None else now) - self.last_used) / 86400.0

    def as_dict(self) -> dict:
        return {**asdict(self), "path": str(self.path)}


def _folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file() and not path.is_symlink())


def _last_used(folder: Path) -> float:
    marker = next((folder / name for name in (LAST_USED_FILE, COMPLETE_MARKER) if (folder / name).exists()), folder)
    return marker.stat().st_mtime


def _packed_entry(folder: Path) -> CacheEntry:
    try:
        meta = json.loads((folder / META_FILE).read_text())
    except (OSError, ValueError):
        meta = {}
    source = str(meta.get("root", ""))
    return CacheEntry(
        path=folder, kind="packed", bytes=_folder_bytes(folder), last_used=_last_used(folder),
        dataset=str(meta.get("dataset", "")), image_size=meta.get("image_size"), images=meta.get("images"),
        source=source, source_exists=bool(source) and Path(source).exists(),
    )


def inventory(cache_root: str | os.PathLike | None = None) -> list[CacheEntry]:
    """Every packed cache, unfinished build and feature file under ``cache_root``, largest first."""
    root = Path(cache_root) if cache_root is not None else paths.cache_dir()
    if not root.is_dir():
        return []
    entries: list[CacheEntry] = []
    for folder in sorted(path for path in root.iterdir() if path.is_dir() and not path.is_symlink()):
        if folder.name == "features":
            for file in sorted(folder.glob("*.npy")):
                stat = file.stat()  # its modification time is its last use (see cache.mark_used)
                entries.append(CacheEntry(file, "features", stat.st_size, stat.st_mtime))
        elif ".building-" in folder.name:
            entries.append(CacheEntry(folder, "unfinished", _folder_bytes(folder), folder.stat().st_mtime))
        elif (folder / COMPLETE_MARKER).exists():
            entries.append(_packed_entry(folder))
        # anything else is not ours: never listed, never removed
    return sorted(entries, key=lambda entry: -entry.bytes)


def select_for_removal(entries: list[CacheEntry], everything: bool = False, unused_days: float | None = None,
                       now: float | None = None) -> list[CacheEntry]:
    """What a clean-up removes.

    Always: unfinished builds older than :data:`UNFINISHED_GRACE_SECONDS` and packed caches
    whose data folder no longer exists. With ``unused_days``: anything not used for that many
    days. With ``everything``: all of it (every cache is rebuilt on demand).
    """
    if unused_days is not None and unused_days < 0:
        raise ValueError(f"unused_days must be >= 0, got {unused_days}")
    now = time.time() if now is None else now
    return [entry for entry in entries
            if everything
            or (entry.kind == "unfinished" and now - entry.last_used > UNFINISHED_GRACE_SECONDS)
            or (entry.kind == "packed" and not entry.source_exists)
            or (unused_days is not None and entry.age_days(now) >= unused_days)]


def remove(entries: list[CacheEntry]) -> int:
    """Delete ``entries``; returns the bytes freed."""
    freed = 0
    for entry in entries:
        if entry.path.is_dir():
            shutil.rmtree(entry.path)
        elif entry.path.exists():
            entry.path.unlink()
        else:
            continue
        freed += entry.bytes
    return freed


def human_bytes(count: float) -> str:
    """``1536`` -> ``'1.5 KB'`` (powers of 1024, GB at most)."""
    if abs(count) < 1024:
        return f"{count:.0f} B"
    for unit in ("KB", "MB", "GB"):
        count /= 1024
        if abs(count) < 1024 or unit == "GB":
            break
    return f"{count:.1f} {unit}"
