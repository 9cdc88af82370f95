from .frn import FRN_IMPLS, TLU, FilterResponseNorm2d, frn_reference
from .norm import (
    ACCEPTED_NORMS,
    FRNOptions,
    NormFactory,
    activation_after,
    residual_activation,
    resolve_norm,
)
