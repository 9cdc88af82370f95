#!/usr/bin/env python
"""Model-level cost of each norm: RetinaNet (or Mask R-CNN) training-iteration time,
inference time per image and memory, as ratios to BN (= BN+ReLU) measured in the same run (norms interleaved
per round, so a noisy shared machine affects them alike). --norms takes any config norm
string (NORM or NORM+ACT, see frn_det/layers/grammar.py); the default is the stock norms,
FRN and the comparators.

    python tools/benchmark_model.py --model tiny                 # configs/tiny_retinanet_cpu.yaml, 160 px
    python tools/benchmark_model.py --norms BN GN FRN GN+TLU --rounds 3
    python tools/benchmark_model.py --model r50 --size 512 --batch 2
    python tools/benchmark_model.py --model r50 --device cuda --size 800 --batch 8
    python tools/benchmark_model.py --model tiny_mask_rcnn --norms BN GN FRN     # the norm in the ROI heads too
    python tools/benchmark_model.py --device cuda --model r50 mask_rcnn_r50 --size 800 --batch 2 8 \
        --precision fp32 amp --norms BN SyncBN GN GNWS BRN EvoNormS0 FRN

One table per model, batch and precision. "amp" runs the training step as Detectron2's
AMPTrainer does (CUDA autocast in float16 around the forward, a GradScaler for the
backward and the step; inference stays in float32, as in Detectron2's evaluation); "fp32"
runs without autocast (convolutions may still use TF32 where torch allows it). On CUDA "step peak MB"
is the most memory the training step allocated beyond what was allocated before it (the
models' weights and optimizer states): activations, gradients, workspaces. "saved MB"
counts the distinct storages autograd keeps for one backward. SyncBN on one GPU is
torch's SyncBatchNorm, which then computes BN's statistics (no process group to sync).
"""
import argparse
import contextlib
import json
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
from frn_det.config.build import build_config  # noqa: E402
from frn_det.engine.optimizer import build_optimizer  # noqa: E402
from frn_det.sweep.planning.d2config import head_keys  # noqa: E402
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


def saved_for_backward_mb(model, batch, autocast) -> float:
    """MB of the distinct storages autograd keeps for one backward (a tensor saved by two
    ops, e.g. a TLU's output and the next conv's input, counts once)."""
    def step():
        with autocast():
            loss = sum(model(batch).values())
        loss.backward()

    storages, _ = saved_storages(step)
    model.zero_grad(set_to_none=True)
    return sum(storages.values()) / 2**20


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", nargs="+", choices=sorted(CONFIGS), default=["tiny"])
    p.add_argument("--norms", nargs="+",
                   default=["BN", "GN", "FRN", "BRN", "GNWS", "EvoNormB0", "EvoNormS0", "GN+TLU", "FRN+ReLU"])
    p.add_argument("--impl", default="auto", help="MODEL.FRN.IMPL for the FRN model")
    p.add_argument("--size", type=int, default=160, help="square image side in pixels")
    p.add_argument("--batch", type=int, nargs="+", default=[4], help="images per training iteration (one table each)")
    p.add_argument("--precision", nargs="+", choices=["fp32", "amp"], default=["fp32"],
                   help="amp: CUDA float16 autocast and a GradScaler, as Detectron2's AMPTrainer (CUDA only)")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds (median reported)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", type=Path, default=None,
                   help="also write every table's rows to this JSON file (rewritten after each table)")
    args = p.parse_args(argv)
    if "BN" not in args.norms:
        p.error("--norms must include BN (ratios are to BN)")
    if args.rounds < 1:
        p.error(f"--rounds must be >= 1, got {args.rounds}")
    if "amp" in args.precision and not args.device.startswith("cuda"):
        p.error("--precision amp needs --device cuda (Detectron2's AMPTrainer autocasts on CUDA only)")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error(f"--device {args.device} but CUDA is not available")
    if args.threads:
        torch.set_num_threads(args.threads)
    failed, results = [], []
    with EventStorage():  # the detectors' losses log to Detectron2's event storage
        for model_name in args.model:
            models, optims, cfg = build_models(model_name, args)
            for batch_size in args.batch:
                for precision in args.precision:
                    try:
                        results += run(models, optims, cfg, model_name, batch_size, precision == "amp", args)
                    except Exception as e:  # noqa: BLE001  one failing table must not hide the others
                        print(f"\n{model_name}, batch {batch_size}, {precision}: FAILED: {type(e).__name__}: {e}",
                              flush=True)
                        failed.append((model_name, batch_size, precision))
                    if args.json:  # what is measured so far survives a time cap
                        args.json.write_text(json.dumps({"device_name": _device_name(args.device),
                                                         "torch": torch.__version__, "size": args.size,
                                                         "rounds": args.rounds, "rows": results,
                                                         "failed": failed}, indent=1))
            del models, optims
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
    if failed:
        sys.exit(f"{len(failed)} table(s) failed: {failed}")


def _device_name(device: str) -> str:
    return torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"


def build_models(model_name, args):
    models, optims = {}, {}
    config_file = str(REPO / "configs" / CONFIGS[model_name])
    head_norm_keys, classes_key = head_keys(config_file)  # RetinaNet's head, or the R-CNN box and mask heads
    for norm in args.norms:
        opts = ["MODEL.DEVICE", args.device, "MODEL.RESNETS.NORM", norm, "MODEL.FPN.NORM", norm,
                *[item for key in head_norm_keys for item in (key, norm)], "MODEL.FRN.IMPL", args.impl,
                "INPUT.MIN_SIZE_TEST", args.size, "INPUT.MAX_SIZE_TEST", args.size]
        if not model_name.startswith("tiny"):
            opts += [classes_key, 80]
        cfg = build_config(config_file, opts, announce=False)
        torch.manual_seed(0)
        models[norm] = build_model(cfg)
        optims[norm] = build_optimizer(cfg, models[norm])
    return models, optims, cfg


def run(models, optims, cfg, model_name, batch_size, amp, args):
    norms = list(models)
    cuda = args.device.startswith("cuda")
    num_classes = 80 if not model_name.startswith("tiny") else 4
    batch = make_batch(batch_size, args.size, num_classes, args.device, masks=cfg.MODEL.MASK_ON)
    infer_batch = [{"image": b["image"], "height": args.size, "width": args.size} for b in batch[:1]]

    def autocast():
        return torch.autocast("cuda", dtype=torch.float16) if amp else contextlib.nullcontext()

    scalers = {n: torch.amp.GradScaler("cuda") for n in norms} if amp else {}

    def train_step(norm):
        model, opt = models[norm], optims[norm]
        with autocast():
            loss = sum(model(batch).values())
        opt.zero_grad(set_to_none=True)
        if amp:
            scalers[norm].scale(loss).backward()
            scalers[norm].step(opt)
            scalers[norm].update()
        else:
            loss.backward()
            opt.step()

    train_t = {n: [] for n in norms}
    infer_t = {n: [] for n in norms}
    peak = {}
    for r in range(args.rounds + 1):  # round 0 warms up
        for norm in norms:
            model = models[norm]
            model.train()
            sync(args.device)
            if cuda and r == 1:  # the step's own peak, beyond the models and optimizer states
                base = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            train_step(norm)
            sync(args.device)
            t1 = time.perf_counter()
            if cuda and r == 1:
                peak[norm] = (torch.cuda.max_memory_allocated() - base) / 2**20
            model.eval()
            with torch.no_grad():
                model(infer_batch)
            sync(args.device)
            t2 = time.perf_counter()
            if r:
                train_t[norm].append(t1 - t0)
                infer_t[norm].append(t2 - t1)
    saved = {}
    for norm in norms:
        models[norm].train()
        saved[norm] = saved_for_backward_mb(models[norm], batch, autocast)

    bn_train, bn_infer = statistics.median(train_t["BN"]), statistics.median(infer_t["BN"])
    gpu = f" ({torch.cuda.get_device_name()})" if cuda else ""
    print(f"\n{cfg.MODEL.META_ARCHITECTURE} {model_name}, {args.size}x{args.size}, batch {batch_size},"
          f" {'AMP (fp16 autocast + GradScaler)' if amp else 'fp32'}, device {args.device}{gpu},"
          f" threads {torch.get_num_threads()}, FRN impl {args.impl}, median of {args.rounds} rounds,"
          f" torch {torch.__version__}")
    w = max(6, max(len(n) for n in norms))
    head = f"{'norm':{w}} {'train s/iter':>12} {'x BN':>6} {'infer s/img':>12} {'x BN':>6} {'saved MB':>9} {'x BN':>6}"
    head += f" {'step peak MB':>12} {'x BN':>6}" if cuda else ""
    print(head)
    rows = []
    for norm in norms:
        tr, inf = statistics.median(train_t[norm]), statistics.median(infer_t[norm])
        line = (f"{norm:{w}} {tr:12.3f} {tr / bn_train:6.2f} {inf:12.3f} {inf / bn_infer:6.2f} {saved[norm]:9.1f}"
                f" {saved[norm] / saved['BN']:6.2f}")
        row = {"model": model_name, "batch": batch_size, "precision": "amp" if amp else "fp32", "norm": norm,
               "train_s_per_iter": tr, "train_x_bn": tr / bn_train, "infer_s_per_img": inf,
               "infer_x_bn": inf / bn_infer, "saved_mb": saved[norm], "saved_x_bn": saved[norm] / saved["BN"]}
        if cuda:
            line += f" {peak[norm]:12.1f} {peak[norm] / peak['BN']:6.2f}"
            row.update(step_peak_mb=peak[norm], step_peak_x_bn=peak[norm] / peak["BN"])
        print(line, flush=True)
        rows.append(row)
    return rows


if __name__ == "__main__":
    main()
