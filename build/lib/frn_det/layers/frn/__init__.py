"""Filter Response Normalization (FRN, optionally with its TLU) and its backends.

    layer.py            FilterResponseNorm2d (the module; impl picks the backend)
    reference.py        frn_reference: the formula op by op
    fused.py            frn_fused: one autograd function, dispatching to
    cpp.py                - the C++ CPU op (layers/csrc/frn_cpu.cpp, built by layers/cpu_ops.py)
    triton_backend.py     - the Triton kernels of triton_kernels.py (CUDA)
                          - or its own fused PyTorch ops ("torch")
"""
from .fused import BACKENDS, frn_fused
from .layer import FRN_IMPLS, FilterResponseNorm2d
from .reference import frn_reference

__all__ = ["FilterResponseNorm2d", "FRN_IMPLS", "frn_reference", "frn_fused", "BACKENDS"]
