"""Checkpoints: atomic saves, unusable files, partial loads."""
import logging
import subprocess
import sys
import textwrap

import pytest
import torch
from detectron2.modeling import build_model
from harness import REPO, tiny_cfg

from frn_det.engine.checkpoint import CheckpointError, SafeDetectionCheckpointer


def small_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3), torch.nn.BatchNorm2d(64))


def test_save_is_atomic_and_tags_last_checkpoint(tmp_path):
    ckpt = SafeDetectionCheckpointer(small_model(), str(tmp_path))
    ckpt.save("model_0000009", iteration=9)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000009.pth"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_0000009.pth"]
    assert ckpt.resume_or_load("", resume=True)["iteration"] == 9


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    SafeDetectionCheckpointer(small_model(), str(tmp_path)).save("model_final")
    data = (tmp_path / "model_final.pth").read_bytes()
    (tmp_path / "broken.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"broken.pth is truncated or corrupt"):
        SafeDetectionCheckpointer(small_model(), str(tmp_path)).load(str(tmp_path / "broken.pth"))


def test_missing_weights_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope.pth \(MODEL.WEIGHTS or last_checkpoint\) does not exist"):
        SafeDetectionCheckpointer(small_model(), str(tmp_path)).load(str(tmp_path / "nope.pth"))


def test_resume_skips_a_checkpoint_that_was_cut_off(tmp_path):
    ckpt = SafeDetectionCheckpointer(small_model(), str(tmp_path))
    ckpt.save("model_0000004", iteration=4)
    ckpt.save("model_0000009", iteration=9)
    path = tmp_path / "model_0000009.pth"
    path.write_bytes(path.read_bytes()[:1000])  # as if killed by a non-atomic writer
    assert SafeDetectionCheckpointer(small_model(), str(tmp_path)).resume_or_load("", resume=True)["iteration"] == 4


def test_write_failure_keeps_earlier_checkpoints(tmp_path):
    # A real write failure: the kernel refuses files over RLIMIT_FSIZE (EFBIG), as it refuses
    # writes on a full disk (ENOSPC).
    script = textwrap.dedent(f"""
        import resource, signal, torch
        from frn_det.engine.checkpoint import SafeDetectionCheckpointer, CheckpointError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        model = torch.nn.Conv2d(3, 256, 5)
        ckpt = SafeDetectionCheckpointer(model, {str(tmp_path)!r})
        ckpt.save("model_0000001", iteration=1)
        resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, resource.RLIM_INFINITY))
        try:
            ckpt.save("model_0000002", iteration=2)
        except CheckpointError as e:
            print("ERROR:", e)
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert "ERROR: could not write checkpoint" in out.stdout and "model_0000002.pth" in out.stdout, out.stderr[-2000:]
    assert "Earlier checkpoints" in out.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_0000001.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    ckpt = SafeDetectionCheckpointer(torch.nn.Conv2d(3, 256, 5), str(tmp_path))
    assert ckpt.resume_or_load("", resume=True)["iteration"] == 1


def test_bn_checkpoint_into_frn_model_reports_what_was_loaded(tmp_path, caplog):
    bn_model = build_model(tiny_cfg("BN"))
    SafeDetectionCheckpointer(bn_model, str(tmp_path)).save("bn")
    frn_model = build_model(tiny_cfg("FRN"))
    frn_keys, bn_keys = set(frn_model.state_dict()), set(bn_model.state_dict())
    same_shape = {k for k in frn_keys & bn_keys if frn_model.state_dict()[k].shape == bn_model.state_dict()[k].shape}
    with caplog.at_level(logging.INFO):
        SafeDetectionCheckpointer(frn_model, str(tmp_path)).load(str(tmp_path / "bn.pth"), checkpointables=[])
    summary = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("Loaded "))
    assert f"Loaded {len(same_shape)} of the model's {len(frn_keys)} tensors" in summary
    assert f"{len(frn_keys - same_shape)} kept their initialisation" in summary
    assert f"{len(bn_keys - frn_keys)} checkpoint tensors ignored" in summary
    assert "tau" in summary and "running_mean" in summary  # examples name real keys


# --eval-only must never evaluate weights that were not loaded.

def test_eval_resume_with_only_truncated_checkpoints_names_every_rejected_file(tmp_path):
    ckpt = SafeDetectionCheckpointer(small_model(), str(tmp_path))
    ckpt.save("model_0000004", iteration=4)
    ckpt.save("model_final")
    for name in ("model_0000004.pth", "model_final.pth"):
        path = tmp_path / name
        path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(CheckpointError) as err:
        SafeDetectionCheckpointer(small_model(), str(tmp_path)).load_for_evaluation("", resume=True)
    message = str(err.value)
    assert "rejected 2" in message and "model_0000004.pth" in message and "model_final.pth" in message
    # Even a MODEL.WEIGHTS fallback must not hide that the run's own checkpoints are unusable.
    other = tmp_path / "elsewhere"
    other.mkdir()
    SafeDetectionCheckpointer(small_model(), str(other)).save("good")
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        SafeDetectionCheckpointer(small_model(), str(tmp_path)).load_for_evaluation(
            str(other / "good.pth"), resume=True
        )


def test_eval_without_any_weights_is_an_error(tmp_path):
    for resume in (True, False):
        with pytest.raises(CheckpointError, match="needs trained weights.*MODEL.WEIGHTS is empty"):
            SafeDetectionCheckpointer(small_model(), str(tmp_path)).load_for_evaluation("", resume=resume)


def test_eval_loads_the_last_good_checkpoint_and_its_values(tmp_path):
    trained = small_model()
    with torch.no_grad():
        trained[1].weight.fill_(3.0)
    SafeDetectionCheckpointer(trained, str(tmp_path)).save("model_final")
    fresh = small_model()
    path = SafeDetectionCheckpointer(fresh, str(tmp_path)).load_for_evaluation("", resume=True)
    assert path.endswith("model_final.pth")
    assert torch.equal(fresh[1].weight, torch.full((64,), 3.0))


def test_eval_refuses_a_checkpoint_that_leaves_parameters_uninitialised(tmp_path):
    SafeDetectionCheckpointer(torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3)), str(tmp_path)).save("partial")
    with pytest.raises(CheckpointError, match=r"1 missing, e.g. \['1.weight'\]|2 missing"):
        SafeDetectionCheckpointer(small_model(), str(tmp_path)).load_for_evaluation(
            str(tmp_path / "partial.pth"), resume=False)


def test_a_file_that_is_not_a_checkpoint_names_the_file(tmp_path):
    bad = tmp_path / "weights.pkl"
    bad.write_bytes(b"this is not a pickle at all")
    with pytest.raises(CheckpointError, match=r"could not read checkpoint .*weights.pkl: UnpicklingError"):
        SafeDetectionCheckpointer(small_model(), str(tmp_path)).load(str(bad))
