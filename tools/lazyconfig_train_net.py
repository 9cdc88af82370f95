#!/usr/bin/env python
"""Train and evaluate a Detectron2 LazyConfig (Python config) with frn-det registered.

Same command line as Detectron2's tools/lazyconfig_train_net.py; overrides use Hydra's
grammar. For example:
    python tools/lazyconfig_train_net.py --config-file configs/lazy/tiny_retinanet_cpu.py
    python tools/lazyconfig_train_net.py --config-file configs/lazy/tiny_retinanet_cpu.py \
        model.backbone.bottom_up.stages.norm=GN train.max_iter=100
    python tools/lazyconfig_train_net.py --config-file configs/lazy/retinanet_R_50_FPN_frn.py --num-gpus 8
    python tools/lazyconfig_train_net.py --config-file ... --eval-only --resume
"""
from frn_det.cli.lazy_train import main

if __name__ == "__main__":
    main()
