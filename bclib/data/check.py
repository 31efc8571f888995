"""Integrity check of a dataset: does every file decode? Read-only; nothing is moved or deleted."""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field

from bclib.data.index import DatasetIndex, Problem, decode_all


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
        return {**asdict(self), "ok": self.ok, "seconds": round(self.seconds, 2)}

    def lines(self) -> list[str]:
        """A short human-readable report."""
        head = (
            f"{self.dataset} at {self.root}: {self.decoded:,} of {self.checked:,} images decode"
            f"; {len(self.problems)} problem(s); {self.ignored_files} non-image file(s) ignored"
        )
        return [head, *(f"  {problem.path}: {problem.reason}" for problem in self.problems)]


def check_dataset(index: DatasetIndex, workers: int = 2, progress: bool = False) -> CheckReport:
    """Decode every image of ``index`` (``workers`` threads) and list those that fail.

    The report's problems are the scanner's skipped files (``index.problems``) followed by the
    files that did not decode; ``sizes`` counts decoded images by ``WIDTHxHEIGHT``. Files are
    only read.
    """
    started = time.perf_counter()
    problems = list(index.problems)
    sizes: Counter[str] = Counter()
    description = f"checking {index.name}" if progress else None
    size_of = lambda image: f"{image.shape[1]}x{image.shape[0]}"  # noqa: E731
    for chunk in decode_all(index, size_of, workers, description=description):
        problems += [result for _, result in chunk if isinstance(result, Problem)]
        sizes.update(result for _, result in chunk if not isinstance(result, Problem))
    return CheckReport(
        dataset=index.name,
        root=str(index.root),
        checked=len(index),
        decoded=sum(sizes.values()),
        problems=problems,
        ignored_files=int(index.ignored_files),
        sizes=dict(sizes.most_common()),
        seconds=time.perf_counter() - started,
    )
