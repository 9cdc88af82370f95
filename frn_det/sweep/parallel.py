"""How many runs a sweep trains at once on this machine, and with how many threads each.

The default launcher (configs/sweep/hydra/launcher/local.yaml, Hydra's joblib launcher)
runs `jobs` runs at once. On CPU every training process gets an equal share of the
cores: small detection models use several cores poorly, so two one-thread runs on two
cores finish a grid sooner than one two-thread run after the other. On CUDA a run uses
its GPUs alone, so one run at a time.
"""
import math
import os
from pathlib import Path
from typing import Optional

MAX_LOCAL_JOBS = 8  # each tiny CPU run holds about 1.2 GB: a cap that fits a 24 GB machine
CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_cpu_limit(root: Path = CGROUP_ROOT) -> Optional[float]:
    """The CPUs a container's CPU quota allows (docker --cpus, Kubernetes limits): cgroup v2
    cpu.max "QUOTA PERIOD", or v1 cpu.cfs_quota_us / cpu.cfs_period_us; None without a quota."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def cpu_cores() -> int:
    """The cores this process may use: its affinity (taskset, cpusets), capped by the
    container's CPU quota, which affinity does not show (a 2-CPU container on a 64-core host
    would otherwise start 8 runs of 8 threads)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    return max(1, min(cores, math.ceil(limit))) if limit else cores


def local_jobs(jobs, device: str, num_gpus: int) -> int:
    """Runs at once: `jobs` when it is a number; "auto": 1 on CUDA, else one run per
    `num_gpus` cores (its CPU workers), at most MAX_LOCAL_JOBS."""
    if str(jobs) != "auto":
        return int(jobs)
    if str(device).startswith("cuda"):
        return 1
    return max(1, min(MAX_LOCAL_JOBS, cpu_cores() // max(1, int(num_gpus))))


def threads_per_worker(threads, runs_at_once: int, num_gpus: int) -> Optional[int]:
    """torch threads of each training process: `threads` when it is a number; "auto": the
    cores shared by the runs at once and each run's workers (at least 1)."""
    if str(threads) != "auto":
        return int(threads)
    return max(1, cpu_cores() // max(1, runs_at_once * int(num_gpus)))
