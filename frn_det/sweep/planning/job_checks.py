"""Type and range checks of the sweep's keys (configs/sweep/), in the sweep's own words.

Without them a bad value reaches Detectron2 and fails in its words (`seed=abc`: "Type
mismatch ... for config key: SEED"). Every key has one rule in SWEEP_RULES, a Rule of
frn_det/config/checks.py (the same rules as the Detectron2 keys) or a dataset
path, output folder or file; a new sweep key's check is one line there. The rules run on
the command-line overrides (every value of a sweep), then on every job of the sweep with
its Detectron2 config built and checked, before Hydra starts any job
(`override_value_error`, from tools/sweep.py: exit status 2, nothing trained or written);
and on each job again before its Detectron2 config is built (`check_job`, from
runner.run_job).
"""
import copy
import functools
import os
import re
from pathlib import Path
from typing import Iterable, List, Optional

from omegaconf import DictConfig, OmegaConf

from ...config.checks import (
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
from ...config.tree import flatten_keys, nearest_keys
from ...data.coco_schema import ANNOTATION_FILE, IMAGE_FOLDER, PathKind, check_dataset_path
from ...layers import parse_norm
from ...layers.registry import option_sections
from ...utils.imports import UserImportError, import_modules
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


class OutputFolder:
    """The rule of output_dir: a folder, or a path where one can be made (not made here: a
    sweep that fails its checks leaves nothing behind)."""

    allowed = "a folder, or a path where one can be made"

    def check(self, key: str, value, job: Optional[DictConfig] = None) -> None:
        NAME.check(key, value)
        if "${" in value:  # an interpolation: checked in the composed job
            return
        problem = folder_problem(Path(value).expanduser())
        if problem:
            raise ConfigError(f"{key}={value!r} is not allowed: {problem}; expected {self.allowed}")


def folder_problem(path: Path) -> Optional[str]:
    """Why no sweep can write into `path`, or None."""
    path = path.absolute()
    if os.path.lexists(path) and not path.exists():
        return f"{path} is a broken link"
    for folder in (path, *path.parents):
        if not folder.exists():
            continue
        below = "" if folder == path else f", so {path} cannot be made"
        if not folder.is_dir():
            return f"{folder} is a file, not a folder{below}"
        if not os.access(folder, os.W_OK | os.X_OK):
            return f"folder {folder} is not writable{below}"
        return None
    return None


class ReferencesFile:
    """The rule of references: a YAML list of published values that the report can read
    (read now: a typo found after the whole sweep would cost its training)."""

    allowed = "null or a readable YAML list of {label, AP, ...} entries, e.g. configs/references/*.yaml"

    def check(self, key: str, value, job: Optional[DictConfig] = None) -> None:
        if value is None:
            return
        from ...report.load import ReportError
        from ...report.references import load_references

        try:
            load_references(Path(str(value)))
        except ReportError as e:  # says what is wrong and what is expected
            raise ConfigError(f"{key}={value!r} is not allowed: {e}") from None
        except (OSError, ValueError) as e:
            why = getattr(e, "strerror", None) or e
            raise ConfigError(f"{key}={value!r} is not allowed: it cannot be read ({why}); expected {self.allowed}") \
                from None


class Imports:
    """The rule of imports: a list of importable modules (a user's norms register themselves
    when imported: docs/own_norm.md); checked by importing them, here, before any job."""

    allowed = "a list of importable module names, e.g. [my_norms] (their folder on PYTHONPATH)"

    def check(self, key: str, value, job: Optional[DictConfig] = None) -> None:
        value = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
        if value is None:
            return
        modules = [value] if isinstance(value, str) else value
        if not isinstance(modules, (list, tuple)) or not all(isinstance(m, str) for m in modules):
            raise ConfigError(f"{key}={value!r} is not allowed: expected {self.allowed}")
        for module in modules:
            try:
                import_modules([module], key)
            except UserImportError as e:
                raise ConfigError(f"{key}={value!r} is not allowed: {e}; expected {self.allowed}") from None


class ConfigFile:
    """The rule of model.config_file and model.lazy_config: a file that is there (its
    content is checked when the first jobs' Detectron2 configs are built up front)."""

    def __init__(self, lazy: bool = False):
        self.lazy = lazy
        self.allowed = ("null or a LazyConfig .py file: absolute, relative to configs/ or to the current folder"
                        if lazy else "a Detectron2 YAML config: absolute, relative to configs/ or in Detectron2's "
                                     "model zoo (e.g. COCO-Detection/retinanet_R_50_FPN_1x.yaml)")

    def check(self, key: str, value, job: Optional[DictConfig] = None) -> None:
        if value is None and self.lazy:
            return
        NAME.check(key, value)
        if self.lazy:
            from ...modeling.lazy_bridge import resolve_lazy_config as resolve
        else:
            from ...config.build import resolve_config_file as resolve
        try:
            resolve(value)
        except FileNotFoundError as e:
            raise ConfigError(f"{key}={value!r} is not allowed: {e}; expected {self.allowed}") from None


class Detectron2Opts:
    """The rule of opts: KEY, VALUE pairs whose keys Detectron2 or frn-det know (their values
    are checked when the jobs' Detectron2 configs are built up front)."""

    allowed = "a list of Detectron2 KEY, VALUE pairs, e.g. [TEST.DETECTIONS_PER_IMAGE,50]"

    def check(self, key: str, value, job: Optional[DictConfig] = None) -> None:
        value = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
        if not (isinstance(value, list) and len(value) % 2 == 0):
            raise ConfigError(f"{key}={value!r} is not allowed: expected {self.allowed}")
        known = _detectron2_keys(tuple(option_sections()))
        for name in value[::2]:
            if not isinstance(name, str) or name not in known:
                close = nearest_keys(str(name), known)
                hint = f" (did you mean {' or '.join(close)}?)" if close else ""
                raise ConfigError(f"{key}={value!r} is not allowed: {name!r} is not a Detectron2 or frn-det config "
                                  f"key{hint}; expected {self.allowed}")


@functools.lru_cache(maxsize=4)
def _detectron2_keys(sections: tuple = ()) -> frozenset:
    """Every key of Detectron2's config with frn-det's, those of `sections` (the registered
    norms' option sections, the cache key) included."""
    from detectron2.config import get_cfg

    from ...config.keys import add_frn_config

    cfg = get_cfg()
    add_frn_config(cfg)
    return frozenset(flatten_keys(cfg))


def _is_norm(value) -> bool:
    parse_norm(value)  # raises on anything else
    return True


def _is_comparison(value) -> bool:
    from ...report.comparisons import parse_comparison

    parse_comparison(value)  # raises on anything else
    return True


NORM = Rule(_is_norm, "a norm string of MODEL.*.NORM, e.g. 'FRN', 'GN', 'BN', 'GN+TLU', 'EvoNormS0' or '' "
                      "(frn_det/layers/grammar.py lists them)")
NAME = Rule(lambda v: isinstance(v, str) and v != "", "a non-empty string")
AUTO_OR_COUNT = Rule(lambda v: v == "auto" or INT_MIN_1.test(v), "'auto' or an integer >= 1")

# One rule per sweep key (keys of configs/sweep/sweep.yaml and of its groups' entries).
SWEEP_RULES = {
    "imports": Imports(),  # first: the norms of the modules it imports are checked below
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
    "output_dir": OutputFolder(),
    "rerun_failed": BOOL,
    "report": BOOL,
    "verbose": BOOL,
    "references": ReferencesFile(),
    "opts": Detectron2Opts(),
    "norm.name": NAME,
    "norm.backbone": NORM,
    "norm.fpn": NORM,
    "norm.head": NORM,
    "model.name": NAME,
    "model.config_file": ConfigFile(),
    "model.lazy_config": ConfigFile(lazy=True),
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
    rank, machines = job.get("machine_rank"), job.get("num_machines")
    if isinstance(rank, int) and isinstance(machines, int) and rank >= machines:
        raise ConfigError(f"machine_rank={rank} is not allowed: expected null or an integer in 0..{machines - 1} "
                          f"(below num_machines={machines})")


def _values(override) -> list:
    """The values of one parsed override: each of a sweep's (choices, ranges), or its one value."""
    if override.is_sweep_override():
        return list(override.sweep_iterator())  # interval(...) and the like raise: the job check sees them
    return [override.value()]


def override_value_error(overrides: Iterable[str], config_dir) -> Optional[str]:
    """The message for the first bad value among the command-line overrides of sweep keys
    (every value of a sweep), then of every job of the sweep (the sweeper's grid, or the
    one job of hydra.mode=RUN): its keys (dataset paths, values from the group entries,
    machine_rank against num_machines) and its Detectron2 config (opts, the model's config
    file), built and checked as the job will; None when all pass. Nothing is written."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = list(overrides)
    parser = OverridesParser.create()
    parsed = [o for o in parser.parse_overrides(overrides)
              if not o.is_delete() and not o.key_or_group.startswith("hydra")]
    # imports first: the norms of the modules it names are checked by the other rules
    parsed.sort(key=lambda o: o.key_or_group != "imports")
    # the user's config folders (hydra.searchpath: a norm/*.yaml of their own), for composing the jobs
    search = [o.input_line for o in parser.parse_overrides(overrides) if o.key_or_group == "hydra.searchpath"]
    axes = []  # (override, its values) in command-line order
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
                axes.append((override, values))
        given = {o.key_or_group for o, _ in axes}
        if _multirun(overrides, config_dir):  # the sweeper's own axes (sweep.yaml) the command line leaves
            params = [f"{k}={v}" for k, v in _sweeper_params(overrides, config_dir).items() if k not in given]
            axes = [(o, _values(o)) for o in parser.parse_overrides(params)] + axes
        else:
            axes = [(o, values[:1]) for o, values in axes]
        return _job_error(axes, config_dir, search)
    except (ConfigError, FileNotFoundError) as e:
        return str(e)


def _multirun(overrides: List[str], config_dir) -> bool:
    modes = [o.split("=", 1)[1].strip().upper() for o in overrides if o.replace(" ", "").startswith("hydra.mode=")]
    mode = modes[-1] if modes else str(OmegaConf.load(Path(config_dir) / "sweep.yaml").hydra.get("mode", "RUN"))
    return mode == "MULTIRUN"


def _sweeper_params(overrides: List[str], config_dir) -> dict:
    """hydra.sweeper.params of sweep.yaml, with the command line's hydra.sweeper.params.KEY=..."""
    params = dict(OmegaConf.to_container(OmegaConf.load(Path(config_dir) / "sweep.yaml").hydra.sweeper.get("params")
                                         or {}))
    for o in overrides:
        key, _, value = o.partition("=")
        if key.startswith("hydra.sweeper.params."):
            params[key[len("hydra.sweeper.params."):]] = value
    return params


def _job_error(axes, config_dir, search=()) -> Optional[str]:
    """The first problem of the jobs that the axes make (every combination of their values).
    Group choices (norm=bn,gn) are composed by Hydra, once per combination of them (with the
    hydra.searchpath overrides in `search`); the other values are set on a copy of that
    config, as Hydra would set them."""
    import itertools
    import logging

    from hydra import compose, initialize_config_dir

    groups = {p.name for p in Path(config_dir).iterdir() if p.is_dir()}
    fixed = list(search) + [o.input_line for o, values in axes if not o.is_sweep_override()]
    group_axes = [(o, v) for o, v in axes if o.is_sweep_override() and o.key_or_group in groups]
    value_axes = [(o, v) for o, v in axes if o.is_sweep_override() and o.key_or_group not in groups]
    logging.disable(logging.WARNING)  # the jobs log their own warnings when they run
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            first = True
            for choice in itertools.product(*[v for _, v in group_axes]):
                chosen = [f"{o.get_key_element()}={_hydra_literal(c)}" for (o, _), c in zip(group_axes, choice)]
                try:
                    base = compose(config_name="sweep", overrides=fixed + chosen)
                except Exception:  # noqa: BLE001  Hydra reports its own errors (unknown group entries...) itself
                    return None
                for values in itertools.product(*[v for _, v in value_axes]):
                    job = copy.deepcopy(base)
                    for (o, _), value in zip(value_axes, values):
                        OmegaConf.update(job, o.key_or_group, value, force_add=True)
                    problem = _problem(job)
                    if problem:
                        where = [*chosen, *(f"{o.key_or_group}={_hydra_literal(v)}" for (o, _), v in
                                            zip(value_axes, values))]
                        return problem if first else f"{problem} (in the sweep's job {' '.join(where)})"
                    first = False
    finally:
        logging.disable(logging.NOTSET)
    return None


def _problem(job: DictConfig) -> Optional[str]:
    """What stops one composed job: its sweep keys, then its Detectron2 config."""
    import yaml

    from ...config.checks import check_config
    from .d2config import build_detectron2_config

    try:
        check_job(job)
        cfg, sched = build_detectron2_config(job, "")
        check_config(cfg, sched.num_workers)
    except (ConfigError, FileNotFoundError) as e:
        return str(e)
    except (ValueError, KeyError, AssertionError, yaml.YAMLError) as e:  # yacs' and the config files' own
        text = str(e).strip("'\"")
        # yacs' "Type mismatch ... for config key: SOLVER.BASE_LR" does not say where the value came from
        return f"{text} (in the Detectron2 config of model.config_file with opts)" if "config key" in text else text
    return None


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
