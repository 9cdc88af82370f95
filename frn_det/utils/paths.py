"""Where frn-det keeps generated files (datasets, compiled kernels)."""
import os
from pathlib import Path


def cache_dir() -> Path:
    """$FRN_DET_CACHE, or ~/.cache/frn_det when it is unset or empty."""
    return Path(os.environ.get("FRN_DET_CACHE") or Path.home() / ".cache" / "frn_det")
