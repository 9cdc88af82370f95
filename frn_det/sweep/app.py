"""tools/sweep.py: the Hydra app that runs one sweep job (see configs/sweep/sweep.yaml)."""
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from .d2config import CONFIGS_DIR
from .runner import run_job


@hydra.main(version_base="1.3", config_path=str(CONFIGS_DIR / "sweep"), config_name="sweep")
def main(job: DictConfig) -> dict:
    return run_job(job, Path(HydraConfig.get().runtime.output_dir))
