"""frn-det-sweep / tools/sweep.py: the Hydra app that runs one sweep job (see configs/sweep/sweep.yaml).

Exit status: 0 when every run of the sweep finished or diverged (a diverged run is a
result); 1 when any run failed, after the other runs and the report are done; 2 when a
sweep key, a file it names or a job's Detectron2 config is wrong, before any job starts.
"""
import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from ..sweep.planning.job_checks import override_value_error
from ..sweep.planning.override_check import unknown_override_error
from ..sweep.running import callbacks
from ..sweep.running.runner import run_job
from ..sweep.running.stop import job_of_a_live_sweep
from ..utils.imports import UserImportError, import_from_env
from ..utils.paths import CONFIGS_DIR


@hydra.main(version_base="1.3", config_path=str(CONFIGS_DIR / "sweep"), config_name="sweep")
def run(job: DictConfig) -> dict:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    with job_of_a_live_sweep(run_dir.name):  # a signal to the sweep process stops its workers too (stop.py)
        return run_job(job, run_dir)


def main() -> None:
    from hydra._internal.utils import get_args_parser

    overrides = get_args_parser().parse_known_args(sys.argv[1:])[0].overrides
    try:
        import_from_env()  # FRN_DET_IMPORTS (the `imports` key is imported with the checks below)
    except UserImportError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    # Unknown keys, bad values and jobs whose config does not build stop the sweep here,
    # before Hydra starts any job (job_checks.override_value_error: every job of the grid).
    config_dir = CONFIGS_DIR / "sweep"
    error = unknown_override_error(overrides, config_dir) or override_value_error(overrides, config_dir)
    if error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    # plan=true: the grid and its cost, nothing trained or submitted to a launcher.
    if any(o.replace(" ", "").lower() == "plan=true" for o in overrides):
        from ..sweep.planning.plan import make_plan, render

        print(render(make_plan(overrides)))
        return
    run()
    if callbacks.FAILED_RUNS:
        log = logging.getLogger("frn_det")
        log.error("%d run(s) failed:\n  %s", len(callbacks.FAILED_RUNS), "\n  ".join(callbacks.FAILED_RUNS))
        sys.exit(1)
