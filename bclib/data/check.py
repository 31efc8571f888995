"""Integrity check of a dataset: does every file decode? Read-only; nothing is moved or deleted."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from bclib.data.index import DatasetIndex, Problem
from bclib.data.imageio import ImageReadError


@dataclass
class CheckReport:
    """What :func:`check_dataset` found: decoded images, problems (path + reason), and counts."""

    dataset: str
    root: str
    checked: int
    decoded: int
    problems: list[Problem] = field(default_factory=list)
    ignored_files: int = 0
    sizes: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when every indexed file decoded and the scan skipped nothing."""
        return not self.problems

    def to_dict(self) -> dict:
        return {
            "dataset": self.dataset,
            "root": self.root,
            "ok": self.ok,
            "checked": self.checked,
            "decoded": self.decoded,
            "problems": [problem.to_dict() for problem in self.problems],
            "ignored_files": self.ignored_files,
            "sizes": dict(self.sizes),
            "seconds": round(self.seconds, 2),
        }

    def lines(self) -> list[str]:
        """A short human-readable report."""
        head = (
            f"{self.dataset} at {self.root}: {self.decoded:,} of {self.checked:,} images decode"
            f"; {len(self.problems)} problem(s); {self.ignored_files} non-image file(s) ignored"
        )
        return [head, *(f"  {problem.path}: {problem.reason}" for problem in self.problems)]


def _check_one(index: DatasetIndex, position: int) -> tuple[str, Problem | None]:
    try:
        image = index.load_image(position)
    except (ImageReadError, OSError) as error:
        return "", Problem(str(index.frame.at[position, "path"]), str(error))
    return f"{image.shape[1]}x{image.shape[0]}", None


def check_dataset(index: DatasetIndex, workers: int = 2, progress: bool = False) -> CheckReport:
    """Decode every image of ``index`` (``workers`` threads) and list those that fail.

    The report's problems are the scanner's skipped files (``index.problems``) followed by the
    files that did not decode; ``sizes`` counts decoded images by ``WIDTHxHEIGHT``. Files are
    only read.
    """
    started = time.perf_counter()
    workers = max(1, int(workers))
    positions = np.arange(len(index))
    bar = tqdm(total=len(index), desc=f"checking {index.name}", unit="img", disable=not progress)
    results: list[tuple[str, Problem | None]] = []
    try:
        if workers == 1:
            for position in positions:
                results.append(_check_one(index, int(position)))
                bar.update(1)
        else:
            with ThreadPoolExecutor(max_workers=workers) as executor:
                for result in executor.map(lambda p: _check_one(index, int(p)), positions, chunksize=64):
                    results.append(result)
                    bar.update(1)
    finally:
        bar.close()
    sizes: dict[str, int] = {}
    problems = list(index.problems)
    for size, problem in results:
        if problem is not None:
            problems.append(problem)
        else:
            sizes[size] = sizes.get(size, 0) + 1
    return CheckReport(
        dataset=index.name,
        root=str(index.root),
        checked=len(index),
        decoded=sum(sizes.values()),
        problems=problems,
        ignored_files=int(index.ignored_files),
        sizes=dict(sorted(sizes.items(), key=lambda item: -item[1])),
        seconds=time.perf_counter() - started,
    )


__all__ = ["CheckReport", "check_dataset"]
