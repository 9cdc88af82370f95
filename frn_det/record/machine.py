"""What a run was trained on, recorded in metrics.json so that a result can be traced:
the CPU, its cores, torch's threads, the GPU and its driver, and the project's git
commit with whether the tree had uncommitted changes."""
import functools
import os
import platform
import subprocess
from pathlib import Path
from typing import Optional

import torch

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _run(*cmd: str) -> Optional[str]:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _gpu() -> dict:
    if not torch.cuda.is_available():
        return {"gpu": None, "gpu_driver": None}
    driver = _run("nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader")
    return {"gpu": torch.cuda.get_device_name(0), "gpu_driver": driver.splitlines()[0] if driver else None}


def _git() -> dict:
    """The commit of the checkout frn_det runs from; None outside a git checkout (a wheel)."""
    commit = _run("git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD")
    if commit is None:
        return {"git_commit": None, "git_dirty": None}
    status = _run("git", "-C", str(PROJECT_ROOT), "status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "git_dirty": bool(status) if status is not None else None}


@functools.lru_cache(maxsize=1)
def _static_record() -> dict:
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), **_gpu(), **_git()}


def machine_record(torch_threads: int) -> dict:
    """{cpu, cores, torch_threads, gpu, gpu_driver, git_commit, git_dirty}; torch_threads:
    those of each training process."""
    return {**_static_record(), "torch_threads": torch_threads}
