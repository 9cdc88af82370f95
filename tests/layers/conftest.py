"""Fixtures of the layer tests."""
import pytest
import torch

from frn_det.layers.frn import triton_backend as frn_triton

CUDA = torch.cuda.is_available()


@pytest.fixture
def dev(monkeypatch):
    """Where the kernels run in this test: compiled on the GPU if there is one, else on CPU
    tensors under Triton's interpreter."""
    if not frn_triton.available():
        pytest.skip(f"Triton kernels unavailable: {frn_triton.unavailable_reason()}")
    if CUDA:
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        assert not frn_triton.interpreting(), "TRITON_INTERPRET=0 not seen by triton.knobs"
        return torch.device("cuda")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert frn_triton.interpreting(), "TRITON_INTERPRET=1 not seen by triton.knobs"
    return torch.device("cpu")
