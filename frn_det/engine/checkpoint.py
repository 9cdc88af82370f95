"""DetectionCheckpointer that never leaves a half-written checkpoint behind.

Saves go to a temporary file that is renamed into place only when complete, and
`last_checkpoint` is replaced atomically, so a kill -9 or a full disk during a save
leaves the previous checkpoint as the one to resume from. Unreadable files and partial
loads (e.g. a BN checkpoint into an FRN model) are reported clearly.
"""
import functools
import logging
import math
import os
import re
import time
import zipfile
from typing import Iterator, List, Optional, Tuple

import torch
from detectron2.checkpoint import DetectionCheckpointer

from ..utils.atomic import write_atomic, write_text_atomic

logger = logging.getLogger("frn_det")


class CheckpointError(RuntimeError):
    pass


class SafeDetectionCheckpointer(DetectionCheckpointer):
    last_incompatible = None  # what the last _load_model could not fill
    resumed_from = None  # set by resume_or_load: the checkpoint it resumed from, "" for none
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
            write_atomic(path, lambda tmp: _torch_save(data, tmp))
        except (OSError, RuntimeError) as e:
            raise CheckpointError(
                f"could not write checkpoint {path} ({getattr(e, 'strerror', None) or e}); the disk may be full. "
                f"Earlier checkpoints in {self.save_dir} are intact."
            ) from e
        self.tag_last_checkpoint(os.path.basename(path))

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        write_text_atomic(os.path.join(self.save_dir, "last_checkpoint"), last_filename_basename)

    def checkpoint_files(self) -> List[str]:
        """The .pth checkpoints in save_dir, newest first (by the iteration in their name:
        model_final, then model_0000019 ...; other names by modification time, after them)."""
        if not self.save_dir or not os.path.isdir(self.save_dir):
            return []
        paths = [os.path.join(self.save_dir, f) for f in os.listdir(self.save_dir) if f.endswith(".pth")]
        return sorted(paths, key=_newest_first)

    def rejected_checkpoints(self) -> List[str]:
        """Checkpoint files in save_dir that cannot be loaded (truncated or corrupt)."""
        return [p for p in self.checkpoint_files() if not _is_complete(p)]

    def _resume_candidates(self) -> Iterator[Tuple[str, Optional[str]]]:
        """(path, what is wrong with it or None) of the checkpoints to resume from, best
        first: the one last_checkpoint names, then this run's model_*.pth newest first.
        Lazy: a caller that stops at the first intact file reads no older one."""
        tagged = super().get_checkpoint_file() if super().has_checkpoint() else ""
        ours = [p for p in self.checkpoint_files() if _RUN_CHECKPOINT.fullmatch(os.path.basename(p))]
        for path in ([tagged] if tagged else []) + [p for p in ours if p != tagged]:
            problem = checkpoint_problem(path)
            yield path, (f"{problem}, named by last_checkpoint" if problem and path == tagged else problem)

    def get_checkpoint_file(self) -> str:
        """The checkpoint named by last_checkpoint; if that one is damaged or missing, the
        newest intact one; "" when there is none."""
        return next((path for path, problem in self._resume_candidates() if problem is None), "")

    def resume_or_load(self, path: str, *, resume: bool = True):
        """Resume from the newest intact checkpoint of save_dir (last_checkpoint's first);
        a damaged one (size, zip directory, CRCs, load) is named and skipped, and without
        any intact one training starts over from `path` (MODEL.WEIGHTS), with a warning."""
        self.resumed_from = ""
        if not resume:
            return self.load(path, checkpointables=[])
        damaged = []
        for candidate, problem in self._resume_candidates():
            if problem is not None:
                damaged.append(f"{candidate} ({problem})")
                continue
            try:
                checkpoint = self.load(candidate)
            except CheckpointError as e:  # intact on disk, but it does not load
                damaged.append(str(e))
                continue
            if damaged:
                logger.warning("resuming from %s: newer checkpoint(s) are damaged and were skipped: %s",
                               candidate, "; ".join(damaged))
            self.resumed_from = candidate
            return checkpoint
        if damaged:
            logger.warning(
                "no intact checkpoint to resume from in %s (damaged: %s): training starts over from iteration 0%s",
                self.save_dir, "; ".join(damaged), f" with the weights of {path}" if path else "")
        return self.load(path, checkpointables=[])

    def load_for_evaluation(self, weights: str, resume: bool) -> str:
        """Load trained weights for --eval-only, or raise: never evaluate an initialised model.

        resume: the last usable checkpoint of save_dir, else `weights` (Detectron2's
        order). A save_dir whose checkpoints are all unusable is an error even when
        `weights` is set: evaluating something else would be a false result. Returns the
        loaded path. Raises CheckpointError naming every rejected file, or when the file
        leaves model parameters uninitialised.
        """
        path = self.get_checkpoint_file() if resume and super().has_checkpoint() else ""
        rejected = self.rejected_checkpoints() if resume and not path else []
        if rejected:
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
        """After resume_or_load: whether it resumed (DefaultTrainer then starts after the
        checkpoint's iteration); before: whether there is an intact checkpoint to resume from."""
        if self.resumed_from is not None:
            return bool(self.resumed_from)
        return bool(self.get_checkpoint_file())

    def _load_file(self, filename):
        problem = checkpoint_problem(filename) if filename.endswith(".pth") and os.path.isfile(filename) else None
        if problem:
            raise CheckpointError(f"checkpoint {filename} is truncated or corrupt ({problem})")
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


class _WriteErrors:
    """A file for torch.save that keeps the OSError of a failed write: torch.save replaces it
    by a RuntimeError that does not say why ("unexpected pos 896 vs 790")."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.f.flush()


def _torch_save(data, path: str) -> None:
    """torch.save into `path`; a failed write raises its OSError ("No space left on device",
    "File too large"), not torch's RuntimeError."""
    with open(path, "wb") as f:
        writer = _WriteErrors(f)
        try:
            torch.save(data, writer)
        except RuntimeError as e:
            if writer.error is not None:
                raise writer.error from e
            raise


def _examples(keys, n=3) -> str:
    keys = sorted(keys)
    return f", e.g. {keys[:n]}" if keys else ""


# The checkpoints a training run writes (PeriodicCheckpointer, the preemption hook).
_RUN_CHECKPOINT = re.compile(r"model_(final|\d+)\.pth")


def _newest_first(path: str):
    match = _RUN_CHECKPOINT.fullmatch(os.path.basename(path))
    order = (0, -math.inf if match.group(1) == "final" else -int(match.group(1))) if match else (1, 0)
    return order + (-os.path.getmtime(path),)


def checkpoint_problem(path: str) -> Optional[str]:
    """What makes a checkpoint file unusable, or None: missing, empty, no zip directory at
    its end (torch.save writes a zip archive whose directory comes last: a truncated file has
    none), or a member whose CRC does not match (bytes changed: torch.load would load them
    silently). Files of other formats (.pkl from the model zoo) are checked when loaded."""
    try:
        st = os.stat(path)
    except OSError as e:
        return "does not exist" if isinstance(e, FileNotFoundError) else f"cannot be read: {e.strerror}"
    except ValueError:  # a NUL byte: the name came from a damaged last_checkpoint
        return "not a file name"
    return _zip_problem(path, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _zip_problem(path: str, size: int, mtime_ns: int) -> Optional[str]:
    """checkpoint_problem of one state of the file (CRCs read it once per process)."""
    if not path.endswith(".pth"):
        return None
    if size == 0:
        return "empty: 0 bytes"
    if not zipfile.is_zipfile(path):
        return f"truncated or not a PyTorch archive: no zip directory at the end of its {size} bytes"
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as e:
        return f"unreadable archive: {e}"
    return f"member {bad} fails its CRC check: bytes changed since it was written" if bad else None


def _is_complete(path: str) -> bool:
    return bool(path) and checkpoint_problem(path) is None
