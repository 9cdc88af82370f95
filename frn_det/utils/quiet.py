"""The one place where third-party import noise is silenced.

Each filter names a warning that a normal run cannot act on:
- torch.jit.script is deprecated: Detectron2 scripts a few helpers at import time;
- pkg_resources is deprecated: Detectron2's model_zoo imports it (setuptools<81 is pinned
  for exactly that reason: the sal-detectron2 wheel imports pkg_resources);
- torch.meshgrid without indexing: called inside Detectron2's anchor generator;
- DDP's broadcast_buffers is deprecated: Detectron2's create_ddp_model passes it (False,
  as every Detectron2 trainer does); torch's replacement also syncs buffers at init.
Our own code must not warn on a normal run; nothing of ours is filtered here.
"""
import warnings

_THIRD_PARTY = (
    (FutureWarning, r"`torch.jit.script` is deprecated"),
    (UserWarning, r"pkg_resources is deprecated"),
    (UserWarning, r"torch.meshgrid: in an upcoming release"),
    (FutureWarning, r"`broadcast_buffers` is deprecated"),
)


def silence_third_party_warnings() -> None:
    for category, message in _THIRD_PARTY:
        warnings.filterwarnings("ignore", message=message, category=category)
