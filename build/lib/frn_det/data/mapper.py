"""A DatasetMapper whose image read failures name the file.

prepare_datasets checks every image before training (DATASETS.CHECK_IMAGES), but a
file can still change or vanish during a run. Detectron2's DatasetMapper then fails
with a bare PIL error ("image file is truncated (14 bytes not processed)") that names
no file. CheckedDatasetMapper re-raises such errors as ImageReadError naming the file,
the record's image_id and the original error. Use it for the train and test loaders:

    build_detection_train_loader(cfg, mapper=CheckedDatasetMapper(cfg, is_train=True))
    build_detection_test_loader(cfg, name, mapper=CheckedDatasetMapper(cfg, is_train=False))
"""
import traceback

from detectron2.data import DatasetMapper

# Functions of detectron2.data.detection_utils that read or size-check the image file:
# an exception raised under one of them is a problem of the file, not of the mapping.
_READ_FUNCTIONS = {"read_image", "check_image_size", "_apply_exif_orientation", "convert_PIL_to_numpy"}


class ImageReadError(RuntimeError):
    """An image failed to read (or had the wrong size) while a data loader mapped its record.

    Takes one message argument only, so that PyTorch's DataLoader can re-raise it from a
    worker process unchanged."""


def _raised_while_reading(exc: BaseException) -> bool:
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.name in _READ_FUNCTIONS and frame.filename.replace("\\", "/").endswith("data/detection_utils.py"):
            return True
    return False


class CheckedDatasetMapper(DatasetMapper):
    """Detectron2's DatasetMapper (same arguments and config), but an image that cannot be
    read raises ImageReadError naming the file and the record's image_id."""

    def __call__(self, dataset_dict):
        try:
            return super().__call__(dataset_dict)
        except Exception as e:
            if isinstance(e, ImageReadError) or not _raised_while_reading(e):
                raise
            file_name = dataset_dict.get("file_name", "<no file_name in the record>")
            image_id = dataset_dict.get("image_id", "<none>")
            raise ImageReadError(
                f"Could not read image {file_name} (image_id {image_id!r}) in the data loader: "
                f"{type(e).__name__}: {e}. The image check before training (DATASETS.CHECK_IMAGES) "
                "decodes every image, so the file has probably changed or been removed since the run "
                "started (or the check was switched off). Restore or fix the file, or remove the "
                "image from the dataset's json, and resume."
            ) from e
