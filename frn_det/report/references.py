"""Load published reference AP values (a YAML list) to show next to the sweep results."""
from pathlib import Path
from typing import List, Optional

import yaml

from .load import ReportError, as_number

OPTIONAL_KEYS = ("norm", "ims_per_gpu", "total_batch", "source")


def load_references(path: Optional[Path]) -> List[dict]:
    """Entries ``{label, AP, mask_AP?, norm?, ims_per_gpu?, total_batch?, source?}`` (AP: box AP;
    mask_AP: the same model's mask AP, drawn on the mask panel); [] when path is None."""
    if path is None:
        return []
    path = Path(path)
    if not path.is_file():
        raise ReportError(f"references file {path} does not exist (expected a YAML list of "
                          "{label, AP, ...} entries)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ReportError(f"references file {path} is not valid YAML: {e}") from e
    if isinstance(data, dict) and "references" in data:  # also accept {references: [...]}
        data = data["references"]
    if not isinstance(data, list):
        raise ReportError(f"references file {path}: expected a YAML list of entries")
    refs = []
    for i, entry in enumerate(data):
        ap = as_number(entry.get("AP")) if isinstance(entry, dict) else None
        if ap is None or not entry.get("label"):
            raise ReportError(
                f"references file {path}: entry {i} needs a 'label' and a numeric 'AP'")
        ref = {"label": str(entry["label"]), "AP": ap}
        if entry.get("mask_AP") is not None:
            mask_ap = as_number(entry["mask_AP"])
            if mask_ap is None:
                raise ReportError(f"references file {path}: entry {i} has a non-numeric 'mask_AP' "
                                  f"({entry['mask_AP']!r})")
            ref["mask_AP"] = mask_ap
        ref.update({k: entry[k] for k in OPTIONAL_KEYS if entry.get(k) is not None})
        refs.append(ref)
    return refs
