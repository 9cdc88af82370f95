"""EvalNorm (Singh & Shrivastava, ICCV 2019, arXiv 1904.06031): BatchNorm whose
evaluation-time statistics are estimated to match the ones it normalized with in training.

No official code is public; this is our estimator of the paper's idea. In training the
layer is BatchNorm2d (batch statistics, the same gradient, the same moving averages) and
also tracks S, the number of samples per training batch (a moving average with BN's
momentum; the first batch sets it). A sample n trained in a batch with S - 1 others was
normalized, per channel, with

    mu_B = (1/S) mu_n + (1 - 1/S) mu_others,  nu_B = (1/S) nu_n + (1 - 1/S) nu_others

(mu, nu: mean and mean square over H, W, equal-sized samples). At evaluation the others
are unknown; their expectation is the population's: mu_others ~ running_mean,
nu_others ~ running_var + running_mean^2. With alpha = 1 / S:

    mu_hat  = alpha mu_n + (1 - alpha) running_mean
    var_hat = alpha nu_n + (1 - alpha) (running_var + running_mean^2) - mu_hat^2
    y = weight * (x - mu_hat) / sqrt(var_hat + eps) + bias

the conditional expectation of the training-time statistics given the sample. S = 1
(one image per worker) gives alpha = 1: the sample's own statistics, exactly what training
used; large S gives BatchNorm's eval. (The paper learns the weights of such a combination;
we fix them at the value that makes the estimate unbiased.) A BN checkpoint loads (S is a
new buffer, 0 = unknown: BN's eval until set).
"""
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["EvalNorm2d"]


class EvalNorm2d(nn.BatchNorm2d):
    """EvalNorm over NCHW tensors (see the module docstring); BatchNorm2d in training."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True, **kwargs):
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine, track_running_stats=True, **kwargs)
        if momentum is None:
            raise ValueError("EvalNorm2d needs a float momentum (moving averages), got None")
        self.register_buffer("batch_samples", torch.zeros(()))  # S; 0 = unknown

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.setdefault(prefix + "batch_samples", torch.zeros(()))  # BN checkpoints lack S
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def alpha(self) -> torch.Tensor:
        """1 / S, or 0 (BatchNorm's eval) while S is unknown."""
        s = self.batch_samples
        return torch.where(s > 0, 1.0 / s.clamp(min=1e-12), torch.zeros_like(s))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if x.numel() == 0:  # empty batch (ROI head without ROIs): running statistics, nothing updated
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        if self.training:
            with torch.no_grad():
                s = self.batch_samples
                s.copy_(torch.where(s > 0, s.lerp(torch.full_like(s, x.shape[0]), self.momentum),
                                    torch.full_like(s, x.shape[0])))
            return super().forward(x)
        alpha = self.alpha().to(x.dtype)
        mean, var = self.running_mean.to(x.dtype).view(1, -1, 1, 1), self.running_var.to(x.dtype).view(1, -1, 1, 1)
        mu_n = x.mean(dim=(2, 3), keepdim=True)
        nu_n = (x * x).mean(dim=(2, 3), keepdim=True)
        mu_hat = alpha * mu_n + (1 - alpha) * mean
        var_hat = (alpha * nu_n + (1 - alpha) * (var + mean * mean) - mu_hat * mu_hat).clamp(min=0)
        y = (x - mu_hat) * torch.rsqrt(var_hat + self.eps)
        if self.weight is not None:
            y = y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return y
