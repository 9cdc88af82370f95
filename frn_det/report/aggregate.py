"""Group runs by (norm, images per GPU) and reduce repeated seeds to mean and std."""
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

from ..record.metrics import DIVERGED, FAILED, FINISHED

# Report order: the BN family first (BN is the baseline), then the batch-independent norms.
# A variant of a listed norm ("gn_tlu", "gn+tlu", "frn_relu") follows its norm.
NORM_ORDER = ("bn", "syncbn", "frozenbn", "brn", "syncbrn", "evalnorm", "cbn", "mabn", "gn", "gnws", "in", "wn",
              "evonorm_b0", "evonorm_s0", "frn")



def norm_sort_key(norm: str) -> Tuple[int, str]:
    if norm in NORM_ORDER:
        return (NORM_ORDER.index(norm), "")
    bases = [b for b in NORM_ORDER if norm.startswith((b + "_", b + "+"))]
    if bases:
        base = max(bases, key=len)  # "syncbn_tlu" belongs to syncbn, not bn
        return (NORM_ORDER.index(base), norm)
    return (len(NORM_ORDER), norm)


def _none_last(value) -> Tuple[bool, object]:
    return (value is None, value if value is not None else 0)


def run_sort_key(run: dict):
    return (
        norm_sort_key(run["norm"]),
        run["ims_per_gpu"],
        _none_last(run.get("seed")),
        str(run.get("run", "")),
        str(run.get("source", "")),
    )


def mean_std(values: List[float]) -> Tuple[float, float]:
    """Mean and sample std (ddof=1); std is 0 for a single value."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float
    n: int


def run_label(run: dict) -> str:
    """Short label for a run that did not finish, e.g. ``diverged@37``."""
    status = run["status"]
    if status == DIVERGED and run.get("diverged_at_iter") is not None:
        return f"diverged@{run['diverged_at_iter']}"
    return status


@dataclass
class Group:
    """All runs (seeds) of one (norm, images per GPU) setting."""

    norm: str
    ims_per_gpu: int
    runs: List[dict] = field(default_factory=list)

    @property
    def finished(self) -> List[dict]:
        return [r for r in self.runs if r["status"] == FINISHED]

    @property
    def unfinished(self) -> List[dict]:
        return [r for r in self.runs if r["status"] != FINISHED]

    @property
    def has_failure(self) -> bool:
        """True when any seed diverged or failed (i.e. ended without a result)."""
        return any(r["status"] in (DIVERGED, FAILED) for r in self.runs)

    def stat(self, key: str, finished_only: bool = True) -> Optional[Stat]:
        runs = self.finished if finished_only else self.runs
        values = [r[key] for r in runs if r.get(key) is not None]
        if not values:
            return None
        mean, std = mean_std(values)
        return Stat(mean, std, len(values))

    def total_batches(self) -> List[int]:
        return sorted({r["total_batch"] for r in self.runs if r.get("total_batch") is not None})


def group_runs(runs: Iterable[dict]) -> Dict[Tuple[str, int], Group]:
    """Groups keyed by (norm, ims_per_gpu), in report order."""
    groups: Dict[Tuple[str, int], Group] = {}
    for run in runs:
        key = (run["norm"], run["ims_per_gpu"])
        groups.setdefault(key, Group(*key)).runs.append(run)
    return dict(sorted(groups.items(), key=lambda kv: (norm_sort_key(kv[0][0]), kv[0][1])))


def norms_in(runs: Iterable[dict]) -> List[str]:
    return sorted({r["norm"] for r in runs}, key=norm_sort_key)


def ims_in(runs: Iterable[dict]) -> List[int]:
    return sorted({r["ims_per_gpu"] for r in runs})


def status_counts(runs: Iterable[dict]) -> Counter:
    return Counter(r["status"] for r in runs)


def distinct(runs: Iterable[dict], key: str) -> List[str]:
    return sorted({str(r[key]) for r in runs if r.get(key) not in (None, "")})
