"""The shipped LazyConfigs as the tests load them: a config with overrides, its model, the
model's parameter shapes, a quick validation set."""

from detectron2.config import LazyConfig, instantiate
from harness import REPO, tiny_cfg, write_small_val

LAZY = REPO / "configs" / "lazy"


TINY_LAZY = LAZY / "tiny_retinanet_cpu.py"


NORM_KEY = "model.backbone.bottom_up.stages.norm"


def lazy_cfg(path=TINY_LAZY, *overrides):
    return LazyConfig.apply_overrides(LazyConfig.load(str(path)), list(overrides))


def lazy_model(norm=None, *overrides, path=TINY_LAZY):
    opts = ([f"{NORM_KEY}={norm}"] if norm is not None else []) + list(overrides)
    return instantiate(lazy_cfg(path, *opts).model)


def shapes(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


TINY_MASK_LAZY = LAZY / "tiny_mask_rcnn_cpu.py"


def small_val_set(tmp_path, n=12):
    """The first n images of frn_shapes_val as their own COCO json, as a LazyConfig's
    dataloader.prepare.register_coco entry (a quick evaluation)."""
    path, image_root = write_small_val(tmp_path, n)
    return f"[[small_val,{path},{image_root}]]"


def yaml_and_lazy_models(norm):
    """The tiny RetinaNet with `norm` built from the YAML config and from the LazyConfig,
    each from seed 0 (the builders create modules in the same order: the same weights)."""
    import torch
    from detectron2.modeling import build_model

    torch.manual_seed(0)
    yaml_model = build_model(tiny_cfg(norm))
    torch.manual_seed(0)
    return yaml_model, lazy_model(norm)
