"""What autograd keeps for the backward: the memory claims of the benchmarks and tests."""
from typing import Any, Callable, Dict, Tuple

import torch


def saved_storages(fn: Callable[..., Any], *args) -> Tuple[Dict[int, int], Any]:
    """Runs fn(*args) and returns ({storage data_ptr: nbytes} of the distinct storages
    autograd saves for the backward meanwhile, fn's result). A tensor saved by two ops
    (e.g. a TLU's output that is also the next conv's input) counts once."""
    storages = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(*args)
    return storages, out
