"""SGD as in Detectron2's common/optim.py, with frn-det's parameter groups: the weight,
bias, tau and eps_l of FRN, TLU's tau, EvoNorm's and BRN's parameters get
`weight_decay_norm`, as BN and GN parameters do (Detectron2's get_default_optimizer_params
does not know those modules). The FRN paper's protocol: momentum 0.9, weight decay 4e-4,
lr 0.04 at a total batch of 64 (Detectron2's 0.01 at 16, scaled linearly).
"""
import torch
from detectron2.config import LazyCall as L

from frn_det.engine.optimizer import lazy_optimizer_params

SGD = L(torch.optim.SGD)(
    # params.model is set to the model by the training script before instantiation.
    params=L(lazy_optimizer_params)(weight_decay_norm=0.0),
    lr=0.04,
    momentum=0.9,
    weight_decay=4e-4,
    nesterov=False,
)
