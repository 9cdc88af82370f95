#!/usr/bin/env python
"""Train and evaluate a Detectron2 model with frn-det's norms registered.

Same command line as Detectron2's tools/train_net.py, for example:
    python tools/train_net.py --config-file configs/tiny_retinanet_cpu.yaml
    python tools/train_net.py --config-file configs/retinanet_R_50_FPN_frn.yaml --num-gpus 8
    python tools/train_net.py --config-file ... --eval-only --resume
"""
from frn_det.cli.train import main

if __name__ == "__main__":
    main()
