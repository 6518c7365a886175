"""bench/optimizer_ops.py on the CPU demo config: it counts, and the fused AdamW dispatches fewer ops."""

import sys

import pytest
import torch

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
import optimizer_ops


def test_fused_adamw_dispatches_fewer_ops_than_foreach():
    real = torch.optim.AdamW
    counts = {impl: optimizer_ops.main(["params.yaml", "--adamw", impl]) for impl in ("foreach", "fused")}
    assert counts["fused"]["adamw_ops"] < counts["foreach"]["adamw_ops"]
    assert counts["fused"]["muon_ops"] == counts["foreach"]["muon_ops"] > 0
    assert counts["fused"]["muon_shape_groups"] >= 1
    assert counts["fused"]["optimizer_step_ops"] > counts["fused"]["muon_ops"] + counts["fused"]["adamw_ops"]
    assert torch.optim.AdamW is real  # the script's stand-in is gone


def test_a_tree_without_golf_is_refused(tmp_path):
    with pytest.raises(SystemExit):
        optimizer_ops.main(["params.yaml", "--adamw", "fused", "--tree", str(tmp_path)])
