"""bench/curves.py: training losses of two sets of result folders at equal steps and at equal seconds."""

from __future__ import annotations

import importlib.util
import json

import pytest
from conftest import REPO

spec = importlib.util.spec_from_file_location("curves", REPO / "bench" / "curves.py")
curves = importlib.util.module_from_spec(spec)
spec.loader.exec_module(curves)


def _folder(root, name, ms_per_step, loss_of_step, layout="flat"):
    """A result folder whose curve logs every 25 steps at ms_per_step, loss_of_step(step) (plus the final
    validation row, which has no training loss)."""
    d = root / name
    (d / "plots").mkdir(parents=True)
    rows = ["step\ttokens\ttrain_s\tlr_scale\ttrain_loss\tval_bpb"]
    rows += [f"{s}\t0\t{s * ms_per_step / 1000:.3f}\t1.0\t{loss_of_step(s):.6f}\t" for s in range(25, 1025, 25)]
    rows.append(f"1000\t0\t{1000 * ms_per_step / 1000:.3f}\t\t\t1.3")
    (d / ("train_curve.tsv" if layout == "flat" else "plots/train_curve.tsv")).write_text("\n".join(rows) + "\n")
    return d


def test_a_side_that_learns_more_per_step_but_steps_slower(tmp_path):
    """A: loss 3 - s/1000 at 150 ms a step; B: 3.1 - s/1000 at 100 ms. Per step A leads by 0.1; per second
    B catches up (at 60 s: A is at step 400, B at step 600)."""
    for seed in (1, 2):
        _folder(tmp_path, f"a_seed{seed}", 150, lambda s: 3.0 - s / 1000, "flat")
        _folder(tmp_path, f"b_seed{seed}", 100, lambda s: 3.1 - s / 1000, "plots")
    out_json = tmp_path / "c.json"
    out = curves.main(["--a", str(tmp_path / "a_seed*"), "--b", str(tmp_path / "b_seed*"), "--steps", "500",
                       "--seconds", "60", "--step-window", "0", "--second-window", "0", "--pace", "100,900",
                       "--json", str(out_json)])
    assert json.loads(out_json.read_text()) == out
    [step], [second] = out["per_step"], out["per_second"]
    assert step["a_minus_b"] == pytest.approx(-0.1)
    assert second["a"] == pytest.approx(3.0 - 0.4) and second["b"] == pytest.approx(3.1 - 0.6)
    assert second["a_minus_b"] == pytest.approx(0.1)
    assert len(out["a"]) == len(out["b"]) == 2
    assert sorted(round(v, 6) for v in out["ms_per_step"].values()) == [100.0, 100.0, 150.0, 150.0]


@pytest.mark.parametrize("argv,message", [
    (["--a", "{tmp}/none*", "--b", "{tmp}/b*"], "no result folder matches"),
    (["--a", "{tmp}/a*", "--b", "{tmp}/b*", "--steps", "5000", "--pace", "100,900"],
     "logged no training loss within 50.0 of step 5000"),
    (["--a", "{tmp}/a*", "--b", "{tmp}/b*", "--seconds", "ten"], "--seconds must be comma-separated numbers"),
    (["--a", "{tmp}/a*", "--b", "{tmp}/b*", "--pace", "250,1250"], "did not log both steps"),
    (["--a", "{tmp}/a*", "--b", "{tmp}/b*", "--pace", "250"], "--pace must be two steps FIRST,LAST"),
])
def test_bad_input_is_one_clear_error(tmp_path, argv, message):
    _folder(tmp_path, "a1", 150, lambda s: 3.0)
    _folder(tmp_path, "b1", 100, lambda s: 3.0)
    with pytest.raises(SystemExit) as e:
        curves.main([a.format(tmp=tmp_path) for a in argv])
    assert message in str(e.value)
