"""The CPU cores this process may use: its affinity (taskset, cpusets), capped by the CPU
quota of the container it runs in, which affinity does not show."""
import math
import os
from pathlib import Path
from typing import Optional

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


def usable_cores() -> int:
    """The cores this process may use: its affinity (taskset, cpusets), capped by the
    container's CPU quota, which affinity does not show (a 2-CPU container on a 64-core host
    would otherwise start 8 runs of 8 threads)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    return max(1, min(cores, math.ceil(limit))) if limit else cores
