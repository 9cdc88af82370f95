"""The OmegaConf resolvers that configs/sweep/ uses, registered on import (Detectron2's
convention: importing registers): run folder names (hydra.run.dir / hydra.sweep.subdir in
sweep.yaml) and how many runs go at once (hydra/launcher/local.yaml)."""
from omegaconf import OmegaConf

from .d2config import run_name
from .parallel import local_jobs

OmegaConf.register_new_resolver("frn_det.run_name", run_name, replace=True)
OmegaConf.register_new_resolver("frn_det.local_jobs", local_jobs, replace=True)
