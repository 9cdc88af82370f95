"""Whether runs that the report puts together were computed the same way.

Runs of one setting (its seeds), and the two settings of a comparison, must differ only
in what the sweep varies: a run's "layout" (how its numbers were computed, recorded in
metrics.json) changes them too, by more than float tolerance after training. Today's
layout fields:

- "<layer> implementation": which implementation each kernel-backed layer ran (FRN C++ /
  Triton / PyTorch, TLU, EvoNorm; metrics.json "implementations"). Compared only among
  runs that have the layer: BN has no FRN to differ in.
- "torch threads": the intra-op threads of the training (metrics.json "machine"): a
  reduction split another way rounds differently (docs/sweep.md).

Pure functions of the run records (report/load.py); tables.py shows them.
"""
from typing import Callable, Dict, Iterable, List, Mapping, Sequence, Tuple

from ..record.metrics import FINISHED

__all__ = ["layout_fields", "differing_fields", "mixed_settings", "mixed_comparisons", "implementation_label"]


def _implementations(run: dict) -> Dict[str, str]:
    record = run.get("implementations")
    if not isinstance(record, dict):  # runs from before it was recorded: unknown, not "none"
        return {}
    return {f"{layer} implementation": str(entry.get("implementation"))
            for layer, entry in record.items() if isinstance(entry, dict)}


def _threads(run: dict) -> Dict[str, str]:
    """A run resumed with other threads than it started with is its own layout ("1 then 2")."""
    machine = run.get("machine") if isinstance(run.get("machine"), dict) else {}
    threads, start = machine.get("torch_threads"), machine.get("torch_threads_at_start")
    if threads is None:
        return {}
    return {"torch threads": str(threads) if start in (None, threads) else f"{start} then {threads}"}


# field extractors: run record -> {field: value}; a run without a field is not compared on it
LAYOUT: Tuple[Callable[[dict], Dict[str, str]], ...] = (_implementations, _threads)


def layout_fields(run: dict) -> Dict[str, str]:
    """The recorded layout of one run: {field: value}."""
    fields: Dict[str, str] = {}
    for extract in LAYOUT:
        fields.update(extract(run))
    return fields


def differing_fields(runs: Iterable[dict]) -> List[str]:
    """The layout fields whose recorded values differ between `runs` (sorted); only
    finished runs count (the others give no number)."""
    values: Dict[str, set] = {}
    for run in runs:
        if run.get("status") == FINISHED:
            for field, value in layout_fields(run).items():
                values.setdefault(field, set()).add(value)
    return sorted(field for field, seen in values.items() if len(seen) > 1)


def mixed_settings(groups: Mapping[tuple, Sequence[dict]]) -> Dict[tuple, List[str]]:
    """{setting: differing fields} for the settings (e.g. (norm, images per GPU) -> its runs)
    whose runs differ in layout."""
    out = {}
    for key, runs in groups.items():
        fields = differing_fields(runs)
        if fields:
            out[key] = fields
    return out


def mixed_comparisons(groups: Mapping[tuple, Sequence[dict]], pairs: Iterable[Tuple[tuple, tuple]]
                      ) -> Dict[Tuple[tuple, tuple], List[str]]:
    """{(setting, baseline): differing fields} for the compared pairs whose runs, taken
    together, differ in layout (a mixed setting makes its comparisons mixed too)."""
    out = {}
    for a, b in pairs:
        fields = differing_fields(list(groups.get(a, ())) + list(groups.get(b, ())))
        if fields:
            out[(a, b)] = fields
    return out


def implementation_label(runs: Iterable[dict]) -> str:
    """The implementations of a setting's finished runs, e.g. "FRN C++, TLU C++"; distinct
    ones joined by " / "; "" when none ran a kernel-backed layer or none recorded it."""
    labels = []
    for run in runs:
        if run.get("status") != FINISHED:
            continue
        fields = _implementations(run)
        text = ", ".join(f"{field.rsplit(' ', 1)[0]} {value}" for field, value in sorted(fields.items()))
        if text and text not in labels:
            labels.append(text)
    return " / ".join(labels)
