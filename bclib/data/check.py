"""Integrity check of a dataset: does every file decode, and do the packed caches still hold its pixels?
Read-only; nothing is moved or deleted."""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from bclib.data.imageio import fit_to_square
from bclib.data.index import DatasetIndex, Problem, decode_all, one_line

if TYPE_CHECKING:
    from bclib.data.cache import PackedCache


@dataclass
class CheckReport:
    """What :func:`check_dataset` found: decoded images, problems (path + reason), and counts.

    ``compared_caches`` lists the packed caches compared with the files; ``stale_caches`` maps
    each of them that holds other pixels than its files to the number of such files.
    """

    dataset: str
    root: str
    checked: int
    decoded: int
    problems: list[Problem] = field(default_factory=list)
    ignored_files: int = 0
    sizes: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    compared_caches: list[str] = field(default_factory=list)
    stale_caches: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every indexed file decoded, the scan skipped nothing and no cache is stale."""
        return not self.problems

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok, "seconds": round(self.seconds, 2)}

    def lines(self) -> list[str]:
        """A short human-readable report (file names escaped to one line each, see ``one_line``)."""
        head = (
            f"{one_line(self.dataset)} at {one_line(self.root)}: {self.decoded:,} of {self.checked:,} images decode"
            f"; {len(self.problems)} problem(s); {self.ignored_files} non-image file(s) ignored"
        )
        stale = [
            f"stale packed cache {one_line(directory)}: {count:,} image(s) differ from their files (a file "
            "changed in place with its size and modification time kept, so the cache key did not change); "
            "delete that folder and pack again"
            for directory, count in self.stale_caches.items()
        ]
        return [head, *(f"  {problem.line()}" for problem in self.problems), *stale]


def check_dataset(index: DatasetIndex, workers: int = 2, progress: bool = False,
                  caches: Sequence[PackedCache] = ()) -> CheckReport:
    """Decode every image of ``index`` (``workers`` threads) and list those that fail.

    The report's problems are the scanner's skipped files (``index.problems``) followed by the
    files that did not decode; ``sizes`` counts decoded images by ``WIDTHxHEIGHT``. With
    ``caches`` (:func:`bclib.data.cache.packed_caches` of ``index``) every decoded image is also
    fitted to each cache's size and compared with the cached pixels: a file that differs, or
    decodes now but was skipped by the pack, is a problem. Files are only read.
    """
    started = time.perf_counter()
    problems = list(index.problems)
    sizes: Counter[str] = Counter()
    stale: Counter[str] = Counter()
    rows = [dict(zip(cache.positions.tolist(), range(len(cache)))) for cache in caches]
    description = f"checking {index.name}" if progress else None

    def measure(image: np.ndarray) -> tuple[str, list[np.ndarray]]:
        return f"{image.shape[1]}x{image.shape[0]}", [fit_to_square(image, cache.image_size) for cache in caches]

    for chunk in decode_all(index, measure, workers, description=description):
        for position, result in chunk:
            if isinstance(result, Problem):
                problems.append(result)
                continue
            size, fitted = result
            sizes[size] += 1
            for cache, row_of, pixels in zip(caches, rows, fitted):
                row = row_of.get(position)
                if row is None or not np.array_equal(cache.images[row], pixels):
                    stale[str(cache.directory)] += 1
                    what = "was skipped by" if row is None else "differs from"
                    problems.append(Problem(str(index.frame.at[position, "path"]),
                                            f"{what} the packed cache {cache.directory.name}"))
    return CheckReport(
        dataset=index.name,
        root=str(index.root),
        checked=len(index),
        decoded=sum(sizes.values()),
        problems=problems,
        ignored_files=int(index.ignored_files),
        sizes=dict(sizes.most_common()),
        seconds=time.perf_counter() - started,
        compared_caches=[str(cache.directory) for cache in caches],
        stale_caches=dict(stale),
    )
