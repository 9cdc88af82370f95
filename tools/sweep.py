#!/usr/bin/env python
"""Sweep COCO training over norms x images per GPU with Hydra (configs/sweep/).

    python tools/sweep.py                                  # the built-in grid (bn, gn, frn x 1, 4
    images x 3 seeds) + report
    python tools/sweep.py hydra.mode=RUN                   # one run
    python tools/sweep.py norm=bn,gn,frn ims_per_gpu=1,2,4
    python tools/sweep.py -m hydra/launcher=submitit_slurm ...   # one SLURM job per run
"""
from frn_det.cli.sweep import main

if __name__ == "__main__":
    main()
