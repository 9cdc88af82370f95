"""Type and range checks of the sweep's keys (configs/sweep/), in the sweep's own words.

Without them a bad value reaches Detectron2 and fails in its words (`seed=abc`: "Type
mismatch ... for config key: SEED"). Every key has one rule in SWEEP_RULES, a Rule of
frn_det/config_checks.py (the same rules as the Detectron2 keys) or a dataset
path; a new sweep key's check is one line there. The rules run on the command-line
overrides (every value of a sweep) and on the composed job of the first combination
before Hydra starts any job (`override_value_error`, from tools/sweep.py), and on each
job before its Detectron2 config is built (`check_job`, from runner.run_job).
"""
import re
from typing import Iterable, Optional

from omegaconf import DictConfig, OmegaConf

from ..config_checks import (
    ANY_INT,
    BOOL,
    DEVICE,
    INT_MIN_0,
    INT_MIN_1,
    MOMENTUM,
    NON_NEGATIVE,
    POSITIVE,
    STEPS,
    TEST_NAMES,
    TRAIN_NAMES,
    ConfigError,
    Rule,
)
from ..data.coco_schema import ANNOTATION_FILE, IMAGE_FOLDER, PathKind, check_dataset_path
from ..layers import parse_norm
from .d2config import ACTIVATION_NAMES, split_dataset_name


class DatasetPath:
    """The rule of a key that holds a path of the dataset=coco_json entry: a readable json
    file or image folder (null for the optional tune split)."""

    def __init__(self, kind: PathKind, split: str, optional: bool = False):
        self.kind, self.split, self.optional = kind, split, optional
        self.allowed = ("null or " if optional else "") + kind.expected

    def check(self, key: str, value, job: Optional[DictConfig] = None) -> None:
        if value is None and self.optional:
            return
        if job is None:  # the dataset's name comes from the composed job
            return
        check_dataset_path(split_dataset_name(job.dataset.name, self.split), value, self.kind, key)


class RegisterTriples:
    """The rule of dataset.register: [name, json file, image folder] triples, paths checked."""

    allowed = "a list of [name, json_file, image_root] triples"

    def check(self, key: str, value, job: Optional[DictConfig] = None) -> None:
        value = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
        if not isinstance(value, list):
            raise ConfigError(f"{key}={value!r} is not allowed: expected {self.allowed}")
        for i, triple in enumerate(value):
            named = isinstance(triple, (list, tuple)) and len(triple) == 3 and isinstance(triple[0], str)
            if not (named and triple[0]):
                raise ConfigError(f"{key}[{i}]={triple!r} is not allowed: expected [name, json_file, image_root]")
            name, json_file, image_root = triple
            check_dataset_path(name, json_file, ANNOTATION_FILE, f"{key}[{i}]")
            check_dataset_path(name, image_root, IMAGE_FOLDER, f"{key}[{i}]")


def _is_norm(value) -> bool:
    parse_norm(value)  # raises on anything else
    return True


def _is_comparison(value) -> bool:
    from ..report.comparisons import parse_comparison

    parse_comparison(value)  # raises on anything else
    return True


NORM = Rule(_is_norm, "a norm string of MODEL.*.NORM, e.g. 'FRN', 'GN', 'BN', 'GN+TLU', 'EvoNormS0' or '' "
                      "(frn_det/layers/grammar.py lists them)")
NAME = Rule(lambda v: isinstance(v, str) and v != "", "a non-empty string")
AUTO_OR_COUNT = Rule(lambda v: v == "auto" or INT_MIN_1.test(v), "'auto' or an integer >= 1")

# One rule per sweep key (keys of configs/sweep/sweep.yaml and of its groups' entries).
SWEEP_RULES = {
    "seed": ANY_INT.note("< 0: a random seed"),
    "ims_per_gpu": INT_MIN_1.note("images per worker"),
    "lr_scale": POSITIVE.note("it multiplies the linearly scaled lr"),
    "act": Rule(lambda v: v is None or str(v).lower() in ACTIVATION_NAMES,
                "null (the norm's own activation) or one of " + ", ".join(map(repr, ACTIVATION_NAMES))),
    "num_gpus": INT_MIN_1.note("workers per machine"),
    "num_machines": INT_MIN_1,
    "machine_rank": INT_MIN_0.or_none().note("below num_machines; null: from the scheduler, or 0 on one machine"),
    "dist_url": Rule(lambda v: v is None or v == "auto" or re.fullmatch(r"(tcp|file)://\S+", v) is not None,
                     "'auto', null or an address such as tcp://HOST:PORT"),
    "jobs": AUTO_OR_COUNT.note("runs at once with the local launcher"),
    "threads": AUTO_OR_COUNT.note("torch threads per training process"),
    "deterministic": BOOL,
    "amp": BOOL.note("mixed precision, CUDA only"),
    "plan": BOOL.note("print the jobs and their cost, train nothing"),
    "precise_bn": BOOL.note("recompute the batch-statistics norms' population statistics before evaluation"),
    "logger.tensorboard": Rule(lambda v: isinstance(v, dict), "a mapping (logger=tensorboard, the default)"),
    "logger.wandb": Rule(lambda v: isinstance(v, dict), "a mapping with the W&B project"),
    "logger.wandb.project": NAME.note("the W&B project"),
    "logger.mlflow": Rule(lambda v: isinstance(v, dict), "a mapping with the MLflow tracking URI"),
    "logger.mlflow.tracking_uri": NAME.or_none().note("null: $MLFLOW_TRACKING_URI, else sqlite:///<output_dir>/mlflow.db"),
    "effect": POSITIVE.or_none().note("AP points; null: the report's default"),
    "primary": Rule(lambda v: v is None or (isinstance(v, (list, tuple)) and all(_is_comparison(c) for c in v)),
                    "null (the report's default) or a list of <norm>-<baseline> comparisons with a baseline bn or "
                    "gn, e.g. [frn-gn,frn-bn]; [] makes the whole difference table one family"),
    "output_dir": NAME,
    "rerun_failed": BOOL,
    "report": BOOL,
    "verbose": BOOL,
    "references": NAME.or_none().note("the path of a references YAML"),
    "opts": Rule(lambda v: isinstance(v, list) and len(v) % 2 == 0,
                 "a list of Detectron2 KEY, VALUE pairs, e.g. [TEST.DETECTIONS_PER_IMAGE,50]"),
    "norm.name": NAME,
    "norm.backbone": NORM,
    "norm.fpn": NORM,
    "norm.head": NORM,
    "model.name": NAME,
    "model.config_file": NAME,
    "model.lazy_config": NAME.or_none().note("a LazyConfig whose model is built instead"),
    "model.device": DEVICE,
    "schedule.name": NAME,
    "schedule.reference_batch": INT_MIN_1.note("the total batch the schedule is written for"),
    "schedule.base_lr": POSITIVE,
    "schedule.max_iter": INT_MIN_1,
    "schedule.steps": STEPS,
    "schedule.warmup_iters": INT_MIN_0,
    "schedule.checkpoint_period": INT_MIN_1,
    "schedule.eval_period": INT_MIN_0.note("0: evaluate at the end only"),
    "schedule.weight_decay": NON_NEGATIVE,
    "schedule.momentum": MOMENTUM,
    "dataset.name": NAME,
    "dataset.num_classes": INT_MIN_1.or_none().note("null with dataset=coco_json: the train json's category count"),
    "dataset.train": TRAIN_NAMES,
    "dataset.test": TRAIN_NAMES,
    "dataset.tune": TEST_NAMES,
    "dataset.register": RegisterTriples(),
    "dataset.train_json": DatasetPath(ANNOTATION_FILE, "train"),
    "dataset.train_images": DatasetPath(IMAGE_FOLDER, "train"),
    "dataset.test_json": DatasetPath(ANNOTATION_FILE, "test"),
    "dataset.test_images": DatasetPath(IMAGE_FOLDER, "test"),
    "dataset.tune_json": DatasetPath(ANNOTATION_FILE, "tune", optional=True),
    "dataset.tune_images": DatasetPath(IMAGE_FOLDER, "tune", optional=True),
}


def check_job(job: DictConfig) -> None:
    """Every sweep key of a composed job against its rule; ConfigError (DatasetPathError for
    a dataset path) naming the sweep key, the value and what is allowed."""
    for key, rule in SWEEP_RULES.items():
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(job, parent) if parent else job
        if not isinstance(node, DictConfig) or leaf not in node.keys():
            continue  # a key of another group entry (e.g. train_json of dataset=coco_json)
        if OmegaConf.is_missing(node, leaf):
            raise ConfigError(f"{key} is not set: expected {rule.allowed}")
        rule.check(key, node[leaf], job)


def _values(override) -> list:
    """The values of one parsed override: each of a sweep's (choices, ranges), or its one value."""
    if override.is_sweep_override():
        return list(override.sweep_iterator())  # interval(...) and the like raise: the job check sees them
    return [override.value()]


def override_value_error(overrides: Iterable[str], config_dir) -> Optional[str]:
    """The message for the first bad value among the command-line overrides of sweep keys
    (every value of a sweep), then of the job that the first value of each sweep composes
    (dataset paths, values from the group entries); None when all pass."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = [o for o in OverridesParser.create().parse_overrides(list(overrides))
              if not o.is_delete() and not o.key_or_group.startswith("hydra")]
    first = []
    try:
        for override in parsed:
            rule = SWEEP_RULES.get(override.key_or_group)
            try:
                values = _values(override)
            except Exception:  # noqa: BLE001  sweeps that are not lists (interval(...)): per job
                values = []
            if rule is not None:
                for value in values:
                    rule.check(override.key_or_group, value)
            if values or not override.is_sweep_override():
                first.append(_with_first_value(override, values))
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            try:
                job = compose(config_name="sweep", overrides=first)
            except Exception:  # noqa: BLE001  Hydra reports its own errors (unknown group entries...) itself
                return None
        check_job(job)
    except (ConfigError, FileNotFoundError) as e:
        return str(e)
    return None


def _with_first_value(override, values) -> str:
    if not override.is_sweep_override():
        return override.input_line
    return f"{override.get_key_element()}={_hydra_literal(values[0])}"


def _hydra_literal(value) -> str:
    """A value in Hydra's override grammar."""
    if value is None:
        return "null"
    if isinstance(value, str):
        if re.fullmatch(r"[\w./:+-]+", value) and value.lower() not in ("null", "true", "false"):
            return value
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)
