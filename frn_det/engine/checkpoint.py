"""DetectionCheckpointer that never leaves a half-written checkpoint behind.

Saves go to a temporary file that is renamed into place only when complete, and
`last_checkpoint` is replaced atomically, so a kill -9 or a full disk during a save
leaves the previous checkpoint as the one to resume from. Unreadable files and partial
loads (e.g. a BN checkpoint into an FRN model) are reported clearly.
"""
import os
import time
import zipfile
from typing import List

import torch
from detectron2.checkpoint import DetectionCheckpointer

from ..utils.atomic import write_atomic, write_text_atomic


class CheckpointError(RuntimeError):
    pass


class SafeDetectionCheckpointer(DetectionCheckpointer):
    last_incompatible = None  # what the last _load_model could not fill
    seconds_saving = 0.0  # wall time spent in save() (a run's cost breakdown)

    def save(self, name: str, **kwargs) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        start = time.perf_counter()
        try:
            self._save(name, **kwargs)
        finally:
            self.seconds_saving += time.perf_counter() - start

    def _save(self, name: str, **kwargs) -> None:
        data = {"model": self.model.state_dict()}
        data.update({key: obj.state_dict() for key, obj in self.checkpointables.items()})
        data.update(kwargs)
        path = os.path.join(self.save_dir, f"{name}.pth")
        self.logger.info("Saving checkpoint to %s", path)
        try:
            write_atomic(path, lambda tmp: torch.save(data, tmp))
        except (OSError, RuntimeError) as e:  # torch.save reports failed writes as RuntimeError
            raise CheckpointError(
                f"could not write checkpoint {path} ({getattr(e, 'strerror', None) or e}); the disk may be full. "
                f"Earlier checkpoints in {self.save_dir} are intact."
            ) from e
        self.tag_last_checkpoint(os.path.basename(path))

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        write_text_atomic(os.path.join(self.save_dir, "last_checkpoint"), last_filename_basename)

    def checkpoint_files(self) -> List[str]:
        """The .pth checkpoints in save_dir, newest first."""
        if not self.save_dir or not os.path.isdir(self.save_dir):
            return []
        paths = [os.path.join(self.save_dir, f) for f in os.listdir(self.save_dir) if f.endswith(".pth")]
        return sorted(paths, key=os.path.getmtime, reverse=True)

    def rejected_checkpoints(self) -> List[str]:
        """Checkpoint files in save_dir that cannot be loaded (truncated or corrupt)."""
        return [p for p in self.checkpoint_files() if not _is_complete(p)]

    def get_checkpoint_file(self) -> str:
        """The checkpoint named by last_checkpoint; if that one is unusable, the newest usable one."""
        tagged = super().get_checkpoint_file()
        if _is_complete(tagged):
            return tagged
        for path in self.checkpoint_files():
            if os.path.basename(path).startswith("model_") and _is_complete(path):
                self.logger.warning("last_checkpoint names an unusable file (%s); resuming from %s", tagged, path)
                return path
        return ""

    def load_for_evaluation(self, weights: str, resume: bool) -> str:
        """Load trained weights for --eval-only, or raise: never evaluate an initialised model.

        resume: the last usable checkpoint of save_dir, else `weights` (Detectron2's
        order). A save_dir whose checkpoints are all unusable is an error even when
        `weights` is set: evaluating something else would be a false result. Returns the
        loaded path. Raises CheckpointError naming every rejected file, or when the file
        leaves model parameters uninitialised.
        """
        rejected = self.rejected_checkpoints()
        path = self.get_checkpoint_file() if resume and super().has_checkpoint() else ""
        if resume and not path and rejected:
            raise CheckpointError(
                f"--eval-only --resume: no usable checkpoint in {self.save_dir}; rejected "
                f"{len(rejected)} truncated or corrupt file(s): {', '.join(rejected)}. Nothing was evaluated."
            )
        path = path or weights
        if not path:
            where = f"no checkpoint in {self.save_dir} and " if resume else ""
            raise CheckpointError(
                f"--eval-only needs trained weights, but {where}MODEL.WEIGHTS is empty. Pass MODEL.WEIGHTS "
                "path/to/model_final.pth, or --resume with OUTPUT_DIR holding a training run's checkpoints. "
                "Nothing was evaluated."
            )
        self.load(path, checkpointables=[])
        incompatible = self.last_incompatible
        params = {name for name, _ in self.model.named_parameters()}
        untrained = sorted(params & set(getattr(incompatible, "missing_keys", ()) or ()))
        skipped = sorted(params & {k for k, *_ in getattr(incompatible, "incorrect_shapes", ()) or ()})
        if untrained or skipped:
            raise CheckpointError(
                f"--eval-only: {path} does not hold all of the model's parameters "
                f"({len(untrained)} missing{_examples(untrained)}; {len(skipped)} with other "
                f"shapes{_examples(skipped)}); "
                "evaluating them at their initial values would report a false AP. Check that MODEL.* matches the "
                "config the checkpoint was trained with. Nothing was evaluated."
            )
        return path

    def has_checkpoint(self) -> bool:
        return super().has_checkpoint() and bool(self.get_checkpoint_file())

    def _load_file(self, filename):
        if filename.endswith(".pth") and os.path.isfile(filename) and not _is_complete(filename):
            raise CheckpointError(f"checkpoint {filename} is truncated or corrupt (not a complete PyTorch archive)")
        try:
            return super()._load_file(filename)
        except Exception as e:  # noqa: BLE001  pickle, zip, torch and OS errors alike: name the file
            raise CheckpointError(
                f"could not read checkpoint {filename}: {type(e).__name__}: {e}. Expected a checkpoint written by "
                "Detectron2 or frn-det (.pth) or a model-zoo .pkl"
            ) from e

    def load(self, path, *args, **kwargs):
        if path and "://" not in path and not os.path.isfile(path):
            raise FileNotFoundError(f"checkpoint {path} (MODEL.WEIGHTS or last_checkpoint) does not exist")
        return super().load(path, *args, **kwargs)

    def _load_model(self, checkpoint):
        incompatible = super()._load_model(checkpoint)
        self.last_incompatible = incompatible  # read by load_for_evaluation
        model_keys = set(self.model.state_dict())
        skipped = {k for k, *_ in incompatible.incorrect_shapes}
        missing = set(incompatible.missing_keys) | skipped
        self.logger.info(
            "Loaded %d of the model's %d tensors from the checkpoint; %d kept their initialisation "
            "(missing or shape mismatch)%s; %d checkpoint tensors ignored (not in the model)%s",
            len(model_keys - missing),
            len(model_keys),
            len(missing),
            _examples(missing),
            len(incompatible.unexpected_keys),
            _examples(incompatible.unexpected_keys),
        )
        return incompatible


def _examples(keys, n=3) -> str:
    keys = sorted(keys)
    return f", e.g. {keys[:n]}" if keys else ""


def _is_complete(path: str) -> bool:
    """torch.save writes a zip archive whose directory is at the end: a truncated file has none."""
    if not path or not os.path.isfile(path):
        return False
    if not path.endswith(".pth"):
        return True  # other formats (.pkl from the model zoo) are checked when loaded
    return zipfile.is_zipfile(path)
