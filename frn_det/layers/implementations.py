"""Which implementation each kernel-backed layer ran in this process, and why.

FRN, TLU and EvoNorm each have several implementations of the same math (C++ CPU kernels,
Triton kernels on CUDA, PyTorch ops) that agree to float tolerance per call, but training
amplifies the rounding: a run's numbers depend on which one ran. The layers say so here
at each call (`note`; a set lookup once seen), and the run records `used()`:

    {"FRN": {"implementation": "C++", "reason": None},
     "TLU": {"implementation": "PyTorch", "reason": "C++ build failed: ..."}}

("reason": why a layer did not run its fast implementation; "A + B" when calls of one
layer took two). A checkpoint carries this record (`RecordedImplementations`, a
checkpointable); a run resumed from it must run the same implementations: the first call
that would switch raises `ImplementationChanged`, before any step of the resumed run.

`prepare(device)` builds the kernels before training processes start (cpu_ops.prepare on
CPU; on CUDA it says whether Triton will run) and names the implementation on the console
when it is not the fast one.
"""
import sys
from typing import Callable, Dict, Optional

import torch

__all__ = ["CPP", "TRITON", "TRITON_INTERPRETER", "PYTORCH", "REFERENCE", "note", "used", "expect", "reset", "label",
           "ImplementationChanged", "RecordedImplementations", "prepare"]

CPP, TRITON, PYTORCH, REFERENCE = "C++", "Triton", "PyTorch", "PyTorch reference"
TRITON_INTERPRETER = "Triton (interpreter)"  # CPU tensors under TRITON_INTERPRET=1 (tests)

_noted = set()  # (layer, implementation) pairs seen: the fast path of note()
_used: Dict[str, Dict[str, Optional[str]]] = {}  # layer -> {implementation: reason}
_expected: Optional[Dict[str, str]] = None  # layer -> implementation(s) of the checkpoint resumed from


class ImplementationChanged(RuntimeError):
    """A resumed run would run another implementation of a layer than its checkpoint did."""


def note(layer: str, implementation: str, reason: Optional[Callable[[], Optional[str]]] = None) -> None:
    """`layer` ("FRN", "TLU", "EvoNorm-S0", ...) runs `implementation` now; `reason()`: why
    it is not the fast one (called once, the first time)."""
    if (layer, implementation) in _noted or torch.compiler.is_compiling():
        return
    why = reason() if reason is not None else None
    _check(layer, implementation, why)
    _used.setdefault(layer, {})[implementation] = why
    _noted.add((layer, implementation))


def _check(layer: str, implementation: str, why: Optional[str]) -> None:
    if _expected is not None and layer in _expected and implementation not in _expected[layer].split(" + "):
        raise ImplementationChanged(
            f"{layer} ran {_expected[layer]} in the checkpoint this run resumes from, and would run {implementation} "
            f"now{f' ({why})' if why else ''}: resuming would switch implementation halfway. Restore the "
            "checkpoint's implementation (docs/performance.md, \"Which implementation runs\"), or start the run "
            "over in a new folder")


def used() -> Dict[str, dict]:
    """{layer: {"implementation": name (or "A + B"), "reason": why not the fast one, or None}}."""
    out = {}
    for layer, impls in sorted(_used.items()):
        reasons = [r for r in impls.values() if r]
        out[layer] = {"implementation": " + ".join(sorted(impls)), "reason": "; ".join(reasons) or None}
    return out


def label(record: Optional[dict]) -> str:
    """One line for a record of used(): "FRN C++, TLU C++"; "" without kernel-backed layers."""
    return ", ".join(f"{layer} {entry.get('implementation')}" for layer, entry in sorted((record or {}).items()))


def expect(record: Optional[dict]) -> None:
    """Calls from now on must run the implementations of `record` (a used() of the run's
    checkpoint); None: no expectation."""
    global _expected
    _expected = {layer: entry["implementation"] for layer, entry in record.items()} if record else None
    for layer, impls in _used.items():  # what ran already must match too
        for implementation, why in impls.items():
            _check(layer, implementation, why)


def reset() -> None:
    """Forget what ran and what was expected (a new run in this process; tests)."""
    global _expected
    _noted.clear()
    _used.clear()
    _expected = None


class RecordedImplementations:
    """Checkpointable (Detectron2's checkpointer.add_checkpointable): saves used() with each
    checkpoint; loading one makes the calls that follow check against it (expect)."""

    def state_dict(self) -> dict:
        return used()

    def load_state_dict(self, state: dict) -> None:
        expect(state)


def _print(line: str) -> None:
    print(f"[frn_det] {line}", file=sys.stderr, flush=True)


def prepare(device: str, announce: Callable[[str], None] = _print) -> None:
    """Before training processes start on `device` ("cpu", "cuda", ...): on CPU build the C++
    kernels or find them unavailable, once, for every training process of this one
    (cpu_ops.prepare); on CUDA say when FRN cannot run its Triton kernels. `announce` gets
    a line for a build, and one for every fallback."""
    if str(device).startswith("cuda") and torch.cuda.is_available():  # (without CUDA, configs run on CPU)
        from .frn import triton_backend

        reason = triton_backend.unavailable_reason()
        if reason is not None:
            announce(f"FRN uses its PyTorch implementation on CUDA in every run: Triton {reason}")
        return
    from . import cpu_ops

    cpu_ops.prepare(announce)
