"""Instance Normalization (Ulyanov, Vedaldi & Lempitsky 2016, arXiv 1607.08022), the "IN"
norm string: each sample and channel normalized over H, W, with a per-channel affine:

    y = weight * (x - mean_hw(x)) / sqrt(var_hw(x) + eps) + bias     (biased variance)

Batch-independent, the same in training and eval. Computed as GroupNorm with one channel
per group (the GN paper's identity IN = GN(C, C)): PyTorch's group-norm kernel, called
without F.group_norm's size check, so that empty batches (an ROI head without ROIs) and
1x1 maps (RetinaNet's P7 on small images, FCs) pass; on a 1x1 map the output is the bias,
as the formula says.
"""
import torch
from torch import nn

__all__ = ["InstanceNorm2d"]


class InstanceNorm2d(nn.GroupNorm):
    """Instance Normalization with a per-channel affine (see the module docstring)."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True):
        super().__init__(num_features, num_features, eps=eps, affine=affine)
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"InstanceNorm2d expects NCHW input, got shape {list(x.shape)}")
        return torch.group_norm(x, self.num_groups, self.weight, self.bias, self.eps, torch.backends.cudnn.enabled)
