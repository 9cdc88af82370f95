"""frn-det's config keys, added to a Detectron2 config by `add_frn_config(cfg)`; the norm
layers' options read from a config (norm_options_from_config) and the norm keys checked
(check_norm_config); the config hash that identifies a run."""
import hashlib
from dataclasses import MISSING, fields
from typing import Dict, Optional, Tuple

from detectron2.config import CfgNode as CN

from ..layers import NormOptions, parse_norm
from ..layers.options import BUILTIN_SECTIONS
from ..layers.registry import norm_specs, option_sections, reference_schedules
from .tracking import DEFAULT_LOGGERS, DEFAULT_PROJECT
from .tree import get_key

# Every config key that takes a norm string: the backbone, the FPN and the heads of
# RetinaNet and the R-CNNs (the box head's FCs take MODEL.ROI_BOX_HEAD.NORM when
# MODEL.ROI_BOX_HEAD.NORM_FCS is True).
NORM_KEYS = ("MODEL.RESNETS.NORM", "MODEL.FPN.NORM", "MODEL.RETINANET.NORM", "MODEL.ROI_BOX_HEAD.NORM",
             "MODEL.ROI_MASK_HEAD.NORM")
# Where each norm key lives in the shipped LazyConfigs (configs/lazy/): the first is the one
# place the others follow through OmegaConf interpolation.
LAZY_NORM_KEYS = {
    "MODEL.RESNETS.NORM": ("model.backbone.bottom_up.stages.norm", "model.backbone.bottom_up.stem.norm"),
    "MODEL.FPN.NORM": ("model.backbone.norm",),
    "MODEL.RETINANET.NORM": ("model.head.norm",),
    "MODEL.ROI_BOX_HEAD.NORM": ("model.roi_heads.box_head.conv_norm",),
    "MODEL.ROI_MASK_HEAD.NORM": ("model.roi_heads.mask_head.conv_norm",),
}
# OPTION_SECTIONS: MODEL.<SECTION> -> the options dataclass whose fields are its keys in lower
# case (learnable_eps <-> MODEL.FRN.LEARNABLE_EPS) and whose field defaults are its defaults.
# REFERENCE_SCHEDULES: MODEL.<SECTION> -> (the SOLVER.MAX_ITER that the section's
# iteration-count defaults were written for, those keys); builtin_norms.py says where each
# comes from. The sweep keeps each key's fraction of its reference schedule
# (NORM_SCHEDULE_FRACTIONS) in every run. All three are read from the norm table
# (frn_det/layers/registry.py) when asked for, so they include norms registered since.


def section_defaults(section: str) -> dict:
    """{KEY: default} of MODEL.<section>, from its options dataclass."""
    return {f.name.upper(): (f.default if f.default is not MISSING else f.default_factory())
            for f in fields(option_sections()[section])}


def norm_schedule_fractions() -> Dict[str, float]:
    """{"MODEL.BRN.WARMUP_START_ITER": 0.04, ...}: each scheduled key's default over its reference schedule."""
    return {
        f"MODEL.{section}.{key}": section_defaults(section)[key] / max_iter
        for section, (max_iter, keys) in reference_schedules().items()
        for key in keys
    }


def __getattr__(name: str):
    derived = {"OPTION_SECTIONS": option_sections, "REFERENCE_SCHEDULES": reference_schedules,
               "NORM_SCHEDULE_FRACTIONS": norm_schedule_fractions}
    if name in derived:
        return derived[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def user_sections() -> Tuple[str, ...]:
    """The option sections of registered norms that NormOptions has no field for (a user's)."""
    return tuple(s for s in option_sections() if s not in BUILTIN_SECTIONS)


def add_norm_sections(cfg):
    """Add MODEL.<SECTION> of every registered norm's options that the config lacks, beyond
    the built-in ones (a user's norms, registered by frn_det.register_norm)."""
    for section in user_sections():
        defaults = section_defaults(section)
        if section in cfg.MODEL:
            if not isinstance(cfg.MODEL[section], CN) or set(cfg.MODEL[section]) != set(defaults):
                raise ValueError(f"MODEL.{section}, the section of the options of the registered norm(s) "
                                 f"{[s.name for s in norm_specs() if s.section == section]}, is already a key of "
                                 "the config with other keys: register the norm with another section")
            continue
        cfg.MODEL[section] = CN(defaults)
    return cfg


def add_frn_config(cfg):
    """Add frn-det's keys with defaults, and the sections of registered norms' options
    (add_norm_sections). Idempotent; configs that never use them still load."""
    if "FRN" in cfg.MODEL:
        return add_norm_sections(cfg)
    # Each section's keys and defaults are its options dataclass's fields (OPTION_SECTIONS).
    # FRN: EPS, the paper's constant epsilon for conv layers; LEARNABLE_EPS, eps + |eps_l| with
    # learned eps_l (init 1e-4), the paper's fix for 1x1 activation maps; RESIDUAL_ACTIVATION
    # after a residual add in FRN ResNets, "TLU" (paper) or "ReLU"; IMPL "auto"/"fused" (fused
    # autograd function: C++ kernels on CPU when they build, Triton kernels on CUDA when
    # triton is installed), "reference" (plain ops), or a fused backend: "torch", "cpp", "triton".
    cfg.MODEL.FRN = CN(section_defaults("FRN"))
    # Batch Renormalization ("BRN", "naiveSyncBRN"/"SyncBRN"; Ioffe 2017). r_max and d_max
    # stay 1 and 0 (BRN = BN) up to WARMUP_START_ITER, then grow linearly to R_MAX (reached
    # at R_MAX_END_ITER) and D_MAX (at D_MAX_END_ITER): the paper's steps (REFERENCE_SCHEDULES);
    # scale them with SOLVER.MAX_ITER for other schedules. The iteration is each layer's own
    # num_batches_tracked (saved in checkpoints). MOMENTUM and EPS as BatchNorm2d's defaults.
    cfg.MODEL.BRN = CN(section_defaults("BRN"))
    # EvoNorm-B0 / -S0 ("EvoNormB0", "EvoNormS0"; Liu et al. 2020): S0's group count, eps,
    # B0's running-variance momentum, and "auto" (C++ kernels on CPU) or "reference".
    cfg.MODEL.EVONORM = CN(section_defaults("EVONORM"))
    # Weight Standardization of the convs a "GNWS" norm follows: (W - mean) / sqrt(var + EPS).
    cfg.MODEL.WS = CN()
    cfg.MODEL.WS.EPS = NormOptions.ws_eps  # the field's default
    # Cross-Iteration BN ("CBN"; Yao et al. 2021): statistics pooled over the BUFFER_SIZE most
    # recent iterations, the current one included (1 = BN; the public code's "buffer 3" is 4),
    # after BURNIN_ITER iterations of plain BN (REFERENCE_SCHEDULES; the sweep scales it with
    # SOLVER.MAX_ITER). Moving averages as BN's.
    cfg.MODEL.CBN = CN(section_defaults("CBN"))
    # Moving Average BN ("MABN"; Yan et al. 2020), the public code's detection defaults:
    # simple moving averages over BUFFER_SIZE iterations (its real_B 32 / 2 images) from
    # WARMUP_ITER on, renormalization to the EMA (clipped to [1/R_MAX, R_MAX]) from
    # RENORM_START_ITER on (REFERENCE_SCHEDULES; the sweep scales both); MOMENTUM of the EMA
    # as BN writes it (the code's 0.98 is 0.02).
    cfg.MODEL.MABN = CN(section_defaults("MABN"))
    # A Python LazyConfig (configs/lazy/*.py) whose `model` Trainer.build_model builds
    # instead of MODEL.META_ARCHITECTURE, with this config's norm keys, MODEL.FRN/BRN/
    # EVONORM/WS/CBN/MABN, class count, pixel mean/std and device applied: an absolute path, a path
    # relative to configs/ (e.g. "lazy/tiny_retinanet_cpu.py") or to the current folder.
    cfg.MODEL.LAZY_CONFIG = ""
    # The R-CNN box head (FRNFastRCNNConvFCHead): True puts MODEL.ROI_BOX_HEAD.NORM after its
    # FC layers too (norm, then the norm's activation in place of the ReLU). FRN there acts
    # on 1x1 maps and always uses the learned eps (MODEL.FRN.LEARNABLE_EPS is for the convs).
    # False is Detectron2's head: norms after the convs only.
    cfg.MODEL.ROI_BOX_HEAD.NORM_FCS = False

    # Extra COCO-format datasets to register by name: a list of
    # (name, json_file, image_root) triples, e.g. from the command line:
    #   DATASETS.REGISTER_COCO "[('mine_train','a.json','imgs/')]"
    cfg.DATASETS.REGISTER_COCO = []
    # What to do with boxes that are non-finite, have width/height <= 0 or lie outside
    # their image by more than 1 px, in COCO-format datasets other than the built-in one:
    # "drop" them with one warning per dataset (counts per reason), or stop with an "error".
    cfg.DATASETS.INVALID_BOXES = "drop"
    # Before training, decode every image of the COCO-format datasets in TRAIN and TEST
    # and compare its size (after EXIF orientation) with the json's width/height; failures
    # are one error listing the files. Parallel, and cached on disk per image folder by
    # (path, size, mtime) under the cache folder, so a re-check of unchanged files only
    # stats them. False skips it (for data you know to be good).
    cfg.DATASETS.CHECK_IMAGES = True
    # Annotations without the 'iscrowd'/'area' that COCO evaluation needs: "fill" them
    # (iscrowd 0; area of the mask, else of the box) in a fixed copy of the json under the
    # cache folder that training and evaluation read, with one warning per dataset; or
    # stop with an "error" before training.
    cfg.DATASETS.MISSING_EVAL_FIELDS = "fill"

    # Experiment trackers (frn_det/engine/trackers.py): any of "tensorboard", "wandb",
    # "mlflow". A W&B project; the group is the W&B group and the MLflow experiment ("": the
    # project); MLflow's tracking URI ("": $MLFLOW_TRACKING_URI, else sqlite:///<OUTPUT_DIR's
    # parent>/mlflow.db). PARAMS: a JSON object of extra run parameters (the sweep's labels).
    cfg.TRACKING = CN()
    cfg.TRACKING.LOGGERS = list(DEFAULT_LOGGERS)
    cfg.TRACKING.PROJECT = DEFAULT_PROJECT
    cfg.TRACKING.GROUP = ""
    cfg.TRACKING.MLFLOW_URI = ""
    cfg.TRACKING.PARAMS = ""
    return add_norm_sections(cfg)


def _options(section: str, cfg):
    node = cfg.MODEL[section]
    options = option_sections()[section]
    return options(**{f.name: node[f.name.upper()] for f in fields(options)})


def norm_options_from_config(cfg) -> NormOptions:
    """NormOptions from MODEL.FRN / BRN / EVONORM / WS / CBN / MABN (add_frn_config); a config
    that lacks one of the comparator sections gets that section's defaults."""
    m = cfg.MODEL
    frn = _options("FRN", cfg)
    optional = {section.lower(): _options(section, cfg) for section in ("BRN", "EVONORM", "CBN", "MABN")
                if section in m}
    if "WS" in m:
        optional["ws_eps"] = m.WS.EPS
    # the sections of a user's registered norms (add_norm_sections)
    extra = tuple(_options(section, cfg) for section in user_sections() if section in m)
    return NormOptions(frn=frn, extra=extra, **optional)



def check_norm_config(cfg) -> Dict[str, Tuple[str, Optional[str]]]:
    """Validate the norm keys (NORM_KEYS) and the norm option keys of a config before
    anything is built; returns {key: (norm, activation)}."""
    parsed = {key: parse_norm(get_key(cfg, key), key) for key in NORM_KEYS}
    norm_options_from_config(cfg)  # raises on bad MODEL.FRN / BRN / EVONORM / WS / CBN / MABN values
    return parsed


def unused_user_sections(cfg) -> Tuple[str, ...]:
    """The sections of a user's registered norms (add_norm_sections) that no norm key of
    the config uses."""
    used = set()
    for key in NORM_KEYS:
        try:
            value = get_key(cfg, key)
        except (AttributeError, KeyError):
            continue
        if isinstance(value, str):
            used.add(value.partition("+")[0])
    sections = {s.section for s in norm_specs() if s.name in used}
    return tuple(s for s in user_sections() if s in cfg.MODEL and s not in sections)


def config_hash(cfg) -> str:
    """Hash of everything that affects the result: the config without its output folder
    and its trackers (so adding a logger neither changes nor restarts a run, and hashes
    from before TRACKING existed stay the same), and without the sections of a user's
    registered norms that none of its norm keys uses (so importing a module with a norm
    leaves the hashes of the runs that do not use it as they were)."""
    c = cfg.clone()
    c.defrost()
    c.OUTPUT_DIR = ""
    c.pop("TRACKING", None)
    for section in unused_user_sections(c):
        c.MODEL.pop(section)
    return hashlib.sha256(c.dump().encode()).hexdigest()[:12]
