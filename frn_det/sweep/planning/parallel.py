"""How many runs a sweep trains at once on this machine, and with how many threads each.

The default launcher (configs/sweep/hydra/launcher/local.yaml, Hydra's joblib launcher)
runs `jobs` runs at once. On CPU every training process gets an equal share of the
cores: small detection models use several cores poorly, so two one-thread runs on two
cores finish a grid sooner than one two-thread run after the other. On CUDA a run uses
its GPUs alone, so one run at a time.
"""
from ...utils.cores import usable_cores

MAX_LOCAL_JOBS = 8  # each tiny CPU run holds about 1.2 GB: a cap that fits a 24 GB machine


def local_jobs(jobs, device: str, num_gpus: int) -> int:
    """Runs at once: `jobs` when it is a number; "auto": 1 on CUDA, else one run per
    `num_gpus` cores (its CPU workers), at most MAX_LOCAL_JOBS."""
    if str(jobs) != "auto":
        return int(jobs)
    if str(device).startswith("cuda"):
        return 1
    return max(1, min(MAX_LOCAL_JOBS, usable_cores() // max(1, int(num_gpus))))


def threads_per_worker(threads, device: str, num_gpus: int) -> int:
    """torch threads of each training process: `threads` when it is a number; "auto": the
    cores shared by as many runs as jobs=auto starts and each run's workers (at least 1).

    Not the runs actually at once: a run's numbers depend on its thread count (a reduction
    split another way rounds differently), so a run alone, resumed or added later to a
    setting must get the threads its sweep's runs got."""
    if str(threads) != "auto":
        return int(threads)
    return max(1, usable_cores() // max(1, local_jobs("auto", device, num_gpus) * int(num_gpus)))
