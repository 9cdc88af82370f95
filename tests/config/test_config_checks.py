"""Config values and keys are checked by frn-det, with the key and what is allowed, before training."""
import pytest
from harness import TINY_CONFIG, run_tool, tiny_cfg

from frn_det.config.checks import ConfigError, check_config


@pytest.mark.parametrize("key,value,allowed", [
    ("SOLVER.IMS_PER_BATCH", "0", "an integer >= 1"),
    ("SOLVER.BASE_LR", "-0.1", "a finite number > 0"),
    ("SOLVER.BASE_LR", "1e999", "a finite number > 0"),
    ("SOLVER.MAX_ITER", "0", "an integer >= 1"),
    ("SOLVER.STEPS", "(300, 100)", "increasing positive integers"),
    ("SOLVER.MOMENTUM", "1.5", "a number in [0, 1)"),
    ("SOLVER.CHECKPOINT_PERIOD", "0", "an integer >= 1"),
    ("INPUT.MIN_SIZE_TRAIN", "(0,)", "a non-empty list of positive integers"),
    ("INPUT.MAX_SIZE_TEST", "-5", "an integer > 0"),
    ("MODEL.RETINANET.NUM_CLASSES", "0", "an integer >= 1"),
    ("MODEL.DEVICE", "'gpu'", "'cpu', 'cuda' or 'cuda:N'"),
    ("DATALOADER.NUM_WORKERS", "-1", "an integer >= 0"),
    ("DATASETS.TRAIN", "()", "a non-empty list of dataset names"),
])
def test_bad_values_name_the_key_the_value_and_what_is_allowed(key, value, allowed):
    with pytest.raises(ConfigError) as err:
        check_config(tiny_cfg("FRN", key, value), 1)
    message = str(err.value)
    assert message.startswith(f"{key}=") and allowed in message


def test_good_tiny_config_passes():
    check_config(tiny_cfg("FRN"), 1)
    check_config(tiny_cfg("GN", "SOLVER.IMS_PER_BATCH", "4"), 2)


@pytest.mark.parametrize("typo,suggestion", [
    ("SOLVER.IMS_PER_BACH", "SOLVER.IMS_PER_BATCH"),
    ("MODEL.RESNET.NORM", "MODEL.RESNETS.NORM"),
    ("SOLVER.BASELR", "SOLVER.BASE_LR"),
])
def test_unknown_key_on_the_command_line_suggests_the_nearest(typo, suggestion):
    with pytest.raises(ConfigError, match=rf"unknown config key {typo} \(in the command-line overrides\); did you "
                                          rf"mean .*{suggestion}"):
        tiny_cfg("FRN", typo, "1")


def test_unknown_key_in_a_yaml_file_names_the_file_and_suggests(tmp_path):
    from frn_det.config.build import build_config

    bad = tmp_path / "bad.yaml"
    bad.write_text(f'_BASE_: "{TINY_CONFIG}"\nSOLVER:\n  MAX_ITERS: 10\n')
    with pytest.raises(ConfigError, match=r"unknown config key SOLVER.MAX_ITERS \(in .*bad.yaml\); did you mean "
                                          r"SOLVER.MAX_ITER"):
        build_config(str(bad))


def test_train_net_rejects_a_zero_batch_before_starting_workers(tmp_path):
    proc = run_tool("train_net.py", "--config-file", TINY_CONFIG, "--num-gpus", 2, "SOLVER.IMS_PER_BATCH", 0,
                    "OUTPUT_DIR", tmp_path, check=False, timeout=300)
    assert proc.returncode != 0
    assert "SOLVER.IMS_PER_BATCH=0 is not allowed: expected an integer >= 1" in proc.stderr
    assert "divisible" not in proc.stderr and "World size" not in proc.stdout + proc.stderr
    assert not list(tmp_path.glob("*.pth"))
