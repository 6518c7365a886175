import pytest
import torch
from safetensors.torch import load_file

from golf.config import load_params
from golf.errors import TrainingError
from golf.train import lr_scale, train
from tests.conftest import REPO


def _train(root, overrides, seed, name, **kw):
    p = load_params(REPO / "params.yaml", overrides + [f"runs_dir={root / name}"])
    rd = p.run_dir(seed)
    return train(p, seed, rd / "train", rd / "ckpt", rd / "plots" / "curve.tsv", **kw), rd


def test_same_seed_identical_different_seed_differs(in_tiny):
    root, _, ov = in_tiny
    m1, r1 = _train(root, ov, 1, "a")
    m2, r2 = _train(root, ov, 1, "b")
    m3, r3 = _train(root, ov, 2, "c")
    assert m1["val_bpb"] == m2["val_bpb"] and m1["val_bpb"] != m3["val_bpb"]
    w1, w2, w3 = (load_file(str(r / "train" / "model.safetensors")) for r in (r1, r2, r3))
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert any(not torch.equal(w1[k], w3[k]) for k in w1)


def test_interrupted_run_resumes_to_identical_weights(in_tiny):
    root, _, ov = in_tiny
    full, rf = _train(root, ov, 1, "full")
    part, rp = _train(root, ov, 1, "resumed", stop_after_steps=3)
    assert part == {"interrupted_at_step": 3} and (rp / "ckpt" / "checkpoint.pt").is_file()
    resumed, rp = _train(root, ov, 1, "resumed")
    assert resumed["steps"] == full["steps"] and resumed["val_bpb"] == full["val_bpb"]
    wf, wr = load_file(str(rf / "train" / "model.safetensors")), load_file(str(rp / "train" / "model.safetensors"))
    assert all(torch.equal(wf[k], wr[k]) for k in wf)


def test_non_finite_loss_stops_with_step_and_keeps_checkpoint(in_tiny):
    root, _, ov = in_tiny
    with pytest.raises(TrainingError, match=r"non-finite training loss .* at step \d+"):
        _train(root, ov + ["train.lr_embed=1.0e+30", "train.lr_scalar=1.0e+30", "train.lr_matrix=1.0e+30",
                           "train.lr_mamba=1.0e+30", "train.warmup_steps=0"], 1, "nan")
    assert not (root / "nan" / "1" / "train" / "model.safetensors").exists()


def test_qat_switches_on_at_its_fraction(in_tiny):
    root, _, ov = in_tiny
    m, _ = _train(root, ov + ["train.qat_start_frac=0.5"], 1, "qat")
    assert m["qat_started_step"] == 3  # max_steps 6: progress 3/6 = 0.5


def test_lr_schedule_warmup_and_warmdown():
    assert lr_scale(0, 0.0, 10, 0.3) == pytest.approx(0.1)
    assert lr_scale(50, 0.5, 10, 0.3) == 1.0
    assert lr_scale(90, 0.85, 10, 0.3) == pytest.approx(0.5)
    assert lr_scale(99, 1.0, 10, 0.3) == 0.0
