"""SGD like Detectron2's build_optimizer, with frn-det's norm parameters treated as such.

Detectron2's get_default_optimizer_params recognises norms by a fixed tuple of module
types; FRN's weight/bias/tau/eps_l, TLU's tau, EvoNorm's weight/bias/v and the shared
affine of BRN's per-level head norms need SOLVER.WEIGHT_DECAY_NORM just like BN's (BRN
itself is a BatchNorm2d subclass). Weight-standardized conv weights ("GNWS") are conv
weights: SOLVER.WEIGHT_DECAY.
"""
import copy
from typing import Any, Dict, List

import torch
from detectron2.solver.build import maybe_add_gradient_clipping, reduce_param_groups

from ..layers import TLU, CycleBatchRenormList, EvoNorm2dB0, EvoNorm2dS0, FilterResponseNorm2d

NORM_MODULE_TYPES = (
    torch.nn.modules.batchnorm._NormBase,  # BatchNorm*, SyncBatchNorm, NaiveSyncBatchNorm, InstanceNorm*
    torch.nn.GroupNorm,
    torch.nn.LayerNorm,
    torch.nn.LocalResponseNorm,
    FilterResponseNorm2d,
    TLU,
    EvoNorm2dB0,
    EvoNorm2dS0,
    CycleBatchRenormList,  # (Detectron2's CycleBatchNormList, used for "BN", is not: parity)
)


def get_optimizer_params(model: torch.nn.Module, cfg) -> List[Dict[str, Any]]:
    """Parameter groups with Detectron2's semantics (norm, bias overrides), FRN-aware."""
    s = cfg.SOLVER
    defaults = {"lr": s.BASE_LR, "weight_decay": s.WEIGHT_DECAY}
    bias_overrides = {}
    if s.BIAS_LR_FACTOR != 1.0:
        bias_overrides["lr"] = s.BASE_LR * s.BIAS_LR_FACTOR
    if s.WEIGHT_DECAY_BIAS is not None:
        bias_overrides["weight_decay"] = s.WEIGHT_DECAY_BIAS
    params, seen = [], set()
    for module in model.modules():
        for name, value in module.named_parameters(recurse=False):
            if not value.requires_grad or value in seen:
                continue
            seen.add(value)
            hyperparams = copy.copy(defaults)
            if isinstance(module, NORM_MODULE_TYPES) and s.WEIGHT_DECAY_NORM is not None:
                hyperparams["weight_decay"] = s.WEIGHT_DECAY_NORM
            if name == "bias":
                hyperparams.update(bias_overrides)
            params.append({"params": [value], **hyperparams})
    return reduce_param_groups(params)


def build_optimizer(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    return maybe_add_gradient_clipping(cfg, torch.optim.SGD)(
        get_optimizer_params(model, cfg),
        lr=cfg.SOLVER.BASE_LR,
        momentum=cfg.SOLVER.MOMENTUM,
        nesterov=cfg.SOLVER.NESTEROV,
        weight_decay=cfg.SOLVER.WEIGHT_DECAY,
    )
