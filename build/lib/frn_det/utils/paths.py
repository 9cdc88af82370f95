"""Where frn-det keeps generated files (datasets, compiled kernels)."""
import os
from pathlib import Path


def cache_dir() -> Path:
    """$FRN_DET_CACHE, or ~/.cache/frn_det when it is unset or empty."""
    return Path(os.environ.get("FRN_DET_CACHE") or Path.home() / ".cache" / "frn_det")


# configs/ ships inside the package: frn_det/configs is a link to the checkout's configs/,
# and a wheel holds a copy of it there (pyproject.toml's package-data).
CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"


def get_config_file(path) -> Path:
    """A config of frn-det's configs/ (like detectron2.model_zoo.get_config_file): `path`
    relative to it, e.g. "tiny_retinanet_cpu.yaml" or "lazy/tiny_retinanet_cpu.py"."""
    found = CONFIGS_DIR / path
    if not found.is_file():
        raise FileNotFoundError(f"{path!r} is not a config in {CONFIGS_DIR}")
    return found
