#!/usr/bin/env python
"""Sweep COCO training over norms x images per GPU with Hydra (configs/sweep/).

    python tools/sweep.py                                  # one CPU demo run + report
    python tools/sweep.py -m norm=bn,gn,frn ims_per_gpu=1,2,4
    python tools/sweep.py -m hydra/launcher=submitit_slurm ...   # one SLURM job per run
"""
from frn_det.sweep.app import main

if __name__ == "__main__":
    main()
