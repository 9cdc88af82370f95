"""Activations that follow a norm: TLU (ReLU is torch's nn.ReLU)."""
from .tlu import TLU, tlu_cpp

__all__ = ["TLU", "tlu_cpp"]
