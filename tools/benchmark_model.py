#!/usr/bin/env python
"""Model-level cost of each norm: RetinaNet (or Mask R-CNN) training-iteration time,
inference time per image and memory, as ratios to BN (= BN+ReLU) measured in the same run (norms interleaved
per round, so a noisy shared machine affects them alike). --norms takes any config norm
string (NORM or NORM+ACT, see frn_det/layers/factory.py); the default is the stock norms,
FRN and the comparators.

    python tools/benchmark_model.py --model tiny                 # configs/tiny_retinanet_cpu.yaml, 160 px
    python tools/benchmark_model.py --norms BN GN FRN GN+TLU --rounds 3
    python tools/benchmark_model.py --model r50 --size 512 --batch 2
    python tools/benchmark_model.py --model r50 --device cuda --size 800 --batch 8
    python tools/benchmark_model.py --model tiny_mask_rcnn --norms BN GN FRN     # the norm in the ROI heads too
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances, PolygonMasks
from detectron2.utils.events import EventStorage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from frn_det.engine.optimizer import build_optimizer  # noqa: E402
from frn_det.engine.train_net import build_config  # noqa: E402
from frn_det.sweep.d2config import head_keys  # noqa: E402
from frn_det.utils.saved_tensors import saved_storages  # noqa: E402

CONFIGS = {"tiny": "tiny_retinanet_cpu.yaml", "r50": "Base-RetinaNet-FRN.yaml",
           "tiny_mask_rcnn": "tiny_mask_rcnn_cpu.yaml", "mask_rcnn_r50": "mask_rcnn_R_50_FPN_frn.yaml"}


def make_batch(n, size, num_classes, device, seed=0, masks=False):
    g = torch.Generator().manual_seed(seed)
    batch = []
    for _ in range(n):
        inst = Instances((size, size))
        xy = torch.rand(4, 2, generator=g) * size * 0.6
        wh = torch.rand(4, 2, generator=g) * size * 0.3 + 8
        inst.gt_boxes = Boxes(torch.cat([xy, xy + wh], dim=1))
        inst.gt_classes = torch.randint(0, num_classes, (4,), generator=g)
        if masks:  # each box's rectangle as its polygon
            inst.gt_masks = PolygonMasks([[[x0, y0, x1, y0, x1, y1, x0, y1]]
                                          for x0, y0, x1, y1 in inst.gt_boxes.tensor.tolist()])
        image = torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8).float()
        batch.append({"image": image.to(device), "instances": inst.to(device), "height": size, "width": size})
    return batch


def saved_for_backward_mb(model, batch) -> float:
    """MB of the distinct storages autograd keeps for one backward (a tensor saved by two
    ops, e.g. a TLU's output and the next conv's input, counts once)."""
    storages, _ = saved_storages(lambda: sum(model(batch).values()).backward())
    model.zero_grad(set_to_none=True)
    return sum(storages.values()) / 2**20


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=sorted(CONFIGS), default="tiny")
    p.add_argument("--norms", nargs="+",
                   default=["BN", "GN", "FRN", "BRN", "GNWS", "EvoNormB0", "EvoNormS0", "GN+TLU", "FRN+ReLU"])
    p.add_argument("--impl", default="auto", help="MODEL.FRN.IMPL for the FRN model")
    p.add_argument("--size", type=int, default=160, help="square image side in pixels")
    p.add_argument("--batch", type=int, default=4, help="images per training iteration")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds (median reported)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if "BN" not in args.norms:
        p.error("--norms must include BN (ratios are to BN)")
    with EventStorage():  # the detectors' losses log to Detectron2's event storage
        run(args)


def run(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    models, optims = {}, {}
    config_file = str(REPO / "configs" / CONFIGS[args.model])
    head_norm_keys, classes_key = head_keys(config_file)  # RetinaNet's head, or the R-CNN box and mask heads
    for norm in args.norms:
        opts = ["MODEL.DEVICE", args.device, "MODEL.RESNETS.NORM", norm, "MODEL.FPN.NORM", norm,
                *[item for key in head_norm_keys for item in (key, norm)], "MODEL.FRN.IMPL", args.impl,
                "INPUT.MIN_SIZE_TEST", args.size, "INPUT.MAX_SIZE_TEST", args.size]
        if not args.model.startswith("tiny"):
            opts += [classes_key, 80]
        cfg = build_config(config_file, opts, announce=False)
        torch.manual_seed(0)
        models[norm] = build_model(cfg)
        optims[norm] = build_optimizer(cfg, models[norm])
    num_classes = 80 if not args.model.startswith("tiny") else 4
    batch = make_batch(args.batch, args.size, num_classes, args.device, masks=cfg.MODEL.MASK_ON)
    infer_batch = [{"image": b["image"], "height": args.size, "width": args.size} for b in batch[:1]]

    train_t = {n: [] for n in args.norms}
    infer_t = {n: [] for n in args.norms}
    for r in range(args.rounds + 1):  # round 0 warms up
        for norm in args.norms:
            model, opt = models[norm], optims[norm]
            model.train()
            sync(args.device)
            t0 = time.perf_counter()
            loss = sum(model(batch).values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sync(args.device)
            t1 = time.perf_counter()
            model.eval()
            with torch.no_grad():
                model(infer_batch)
            sync(args.device)
            t2 = time.perf_counter()
            if r:
                train_t[norm].append(t1 - t0)
                infer_t[norm].append(t2 - t1)
    memory = {}
    for norm in args.norms:
        models[norm].train()
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        memory[norm] = saved_for_backward_mb(models[norm], batch)
        if args.device.startswith("cuda"):
            memory[norm] = (memory[norm], torch.cuda.max_memory_allocated() / 2**20)

    bn_train, bn_infer = statistics.median(train_t["BN"]), statistics.median(infer_t["BN"])
    bn_mem = memory["BN"] if not isinstance(memory["BN"], tuple) else memory["BN"][0]
    print(f"{cfg.MODEL.META_ARCHITECTURE} {args.model}, {args.size}x{args.size}, batch {args.batch}, device {args.device}, "
          f"threads {torch.get_num_threads()}, FRN impl {args.impl}, median of {args.rounds} rounds, torch {torch.__version__}")
    w = max(6, max(len(n) for n in args.norms))
    print(f"{'norm':{w}} {'train s/iter':>12} {'x BN':>6} {'infer s/img':>12} {'x BN':>6} {'saved MB':>9} {'x BN':>6}")
    for norm in args.norms:
        tr, inf = statistics.median(train_t[norm]), statistics.median(infer_t[norm])
        mem = memory[norm] if not isinstance(memory[norm], tuple) else memory[norm][0]
        print(f"{norm:{w}} {tr:12.3f} {tr / bn_train:6.2f} {inf:12.3f} {inf / bn_infer:6.2f} {mem:9.1f}"
              f" {mem / bn_mem:6.2f}")


if __name__ == "__main__":
    main()
