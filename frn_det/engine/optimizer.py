"""SGD like Detectron2's build_optimizer, with frn-det's norm parameters treated as such.

Detectron2's get_default_optimizer_params recognises norms by a fixed tuple of module
types; FRN's weight/bias/tau/eps_l, TLU's tau, EvoNorm's weight/bias/v and the shared
affine of the per-level head norms of BRN, EvalNorm, CBN and MABN, and MABN's
weight/bias need SOLVER.WEIGHT_DECAY_NORM just like BN's (BRN
itself is a BatchNorm2d subclass). Weight-standardized conv weights ("GNWS") are conv
weights: SOLVER.WEIGHT_DECAY.
"""
import copy
from typing import Any, Callable, Dict, List, Optional

import torch
from detectron2.solver.build import maybe_add_gradient_clipping, reduce_param_groups

from ..layers import TLU, CycleBatchRenormList, EvoNorm2dB0, EvoNorm2dS0, FilterResponseNorm2d
from ..layers.factory import is_norm_layer
from ..layers.norms import MABN2d

NORM_MODULE_TYPES = (
    torch.nn.modules.batchnorm._NormBase,  # BatchNorm*, SyncBatchNorm, NaiveSyncBatchNorm, InstanceNorm*
    torch.nn.GroupNorm,
    torch.nn.LayerNorm,
    torch.nn.LocalResponseNorm,
    FilterResponseNorm2d,
    TLU,
    EvoNorm2dB0,
    EvoNorm2dS0,
    MABN2d,  # (EvalNorm and CBN are BatchNorm2d subclasses, IN a GroupNorm)
    CycleBatchRenormList,  # (Detectron2's CycleBatchNormList, used for "BN", is not: parity)
)


def is_norm(module: torch.nn.Module) -> bool:
    """A norm's module: one of NORM_MODULE_TYPES, or built from the norm table (a user's norm)."""
    return isinstance(module, NORM_MODULE_TYPES) or is_norm_layer(module)


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
            if is_norm(module) and s.WEIGHT_DECAY_NORM is not None:
                hyperparams["weight_decay"] = s.WEIGHT_DECAY_NORM
            if name == "bias":
                hyperparams.update(bias_overrides)
            params.append({"params": [value], **hyperparams})
    return reduce_param_groups(params)


def lazy_optimizer_params(
    model: torch.nn.Module,
    base_lr: Optional[float] = None,
    weight_decay: Optional[float] = None,
    weight_decay_norm: Optional[float] = None,
    bias_lr_factor: Optional[float] = 1.0,
    weight_decay_bias: Optional[float] = None,
    lr_factor_func: Optional[Callable[[str], float]] = None,
    overrides: Optional[Dict[str, Dict[str, float]]] = None,
) -> List[Dict[str, Any]]:
    """Detectron2's get_default_optimizer_params (same arguments and semantics) with
    frn-det's norms (NORM_MODULE_TYPES: FRN, TLU, EvoNorm, BRN's per-level list) counted as
    norms, for LazyConfigs:

        optimizer = L(torch.optim.SGD)(params=L(lazy_optimizer_params)(weight_decay_norm=0.0), lr=..., ...)

    `model` is set by the training script (cfg.optimizer.params.model = model). base_lr /
    weight_decay None: the optimizer's lr / weight_decay apply.
    """
    overrides = copy.deepcopy(dict(overrides or {}))
    defaults = {}
    if base_lr is not None:
        defaults["lr"] = base_lr
    if weight_decay is not None:
        defaults["weight_decay"] = weight_decay
    bias_overrides = {}
    if bias_lr_factor is not None and bias_lr_factor != 1.0:
        if base_lr is None:
            raise ValueError("bias_lr_factor requires base_lr")
        bias_overrides["lr"] = base_lr * bias_lr_factor
    if weight_decay_bias is not None:
        bias_overrides["weight_decay"] = weight_decay_bias
    if bias_overrides:
        if "bias" in overrides:
            raise ValueError("Conflicting overrides for 'bias'")
        overrides["bias"] = bias_overrides
    if lr_factor_func is not None and base_lr is None:
        raise ValueError("lr_factor_func requires base_lr")
    params, seen = [], set()
    for module_name, module in model.named_modules():
        for name, value in module.named_parameters(recurse=False):
            if not value.requires_grad or value in seen:
                continue
            seen.add(value)
            hyperparams = copy.copy(defaults)
            if is_norm(module) and weight_decay_norm is not None:
                hyperparams["weight_decay"] = weight_decay_norm
            if lr_factor_func is not None:
                hyperparams["lr"] *= lr_factor_func(f"{module_name}.{name}")
            hyperparams.update(overrides.get(name, {}))
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
