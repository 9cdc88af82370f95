"""tools/sweep.py: the Hydra app that runs one sweep job (see configs/sweep/sweep.yaml).

Exit status: 0 when every run of the sweep finished or diverged (a diverged run is a
result); 1 when any run failed, after the other runs and the report are done.
"""
import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from . import callbacks
from .d2config import CONFIGS_DIR, run_name
from .override_check import unknown_override_error
from .runner import run_job

# Run folder names (hydra.run.dir / hydra.sweep.subdir in sweep.yaml).
OmegaConf.register_new_resolver("frn_det.run_name", run_name, replace=True)


@hydra.main(version_base="1.3", config_path=str(CONFIGS_DIR / "sweep"), config_name="sweep")
def run(job: DictConfig) -> dict:
    return run_job(job, Path(HydraConfig.get().runtime.output_dir))


def main() -> None:
    from hydra._internal.utils import get_args_parser

    overrides = get_args_parser().parse_known_args(sys.argv[1:])[0].overrides
    error = unknown_override_error(overrides, CONFIGS_DIR / "sweep")
    if error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    # plan=true: the grid and its cost, nothing trained or submitted to a launcher.
    if any(o.replace(" ", "").lower() == "plan=true" for o in overrides):
        from .plan import make_plan, render

        print(render(make_plan(overrides)))
        return
    run()
    if callbacks.FAILED_RUNS:
        log = logging.getLogger("frn_det")
        log.error("%d run(s) failed:\n  %s", len(callbacks.FAILED_RUNS), "\n  ".join(callbacks.FAILED_RUNS))
        sys.exit(1)
