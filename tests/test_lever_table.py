"""bench/lever_table.py: issue 23's lever table from the sweep's run folders, each run matched to its pair of
lever_pairs.sh, the side's common settings (HYBRID_SETS / ATTN_SETS) left out, Δ against each side's base."""

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("lever_table", ROOT / "bench" / "lever_table.py")
lever_table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lever_table)

PAIRS = """PAIRS=(
  " | "
  "model.xsa=true | model.xsa=true"
  "train.batch_tokens=65536 | train.batch_tokens=65536"
  # a comment line, skipped
  "train.batch_tokens=65536 train.max_steps=960 | train.batch_tokens=65536 train.max_steps=1240"
  "model.rope_dims=16 | "
)
"""


def _run(root: Path, label: str, seed: int, bpb: float, losses: dict[int, float], tok_s=1000.0, steps=480):
    d = root / label / str(seed)
    (d / "metrics").mkdir(parents=True)
    (d / "plots").mkdir()
    (d / "metrics" / "train.json").write_text(json.dumps({"val_bpb": bpb, "tok_per_s": tok_s, "steps": steps}))
    rows = ["step\ttokens\ttrain_s\tlr_scale\ttrain_loss\tval_bpb"]
    rows += [f"{s}\t0\t0\t1\t{v}\t" for s, v in losses.items()] + [f"{steps}\t0\t0\t\t\t{bpb}"]
    (d / "plots" / "train_curve.tsv").write_text("\n".join(rows) + "\n")


@pytest.fixture
def block(tmp_path):
    pairs = tmp_path / "pairs.sh"
    pairs.write_text(PAIRS)
    runs = tmp_path / "runs_sweep"
    h, a = "hybrid_seed_fit__train.max_steps=480", "attn_fit__train.max_steps=620"
    _run(runs, f"{h}__train.profile_steps=3", 1337, 1.45, {275: 9.0, 300: 2.6, 375: 2.8, 400: 9.0})
    _run(runs, f"{a}__train.profile_steps=3", 1337, 1.44, {300: 2.7}, steps=620)
    _run(runs, f"{h}__model.xsa=true", 1337, 1.452, {300: 2.5})
    _run(runs, f"{h}__model.xsa=true", 42, 1.456, {300: 2.7}, tok_s=3000.0)
    _run(runs, f"{a}__model.xsa=true", 1337, 1.43, {}, steps=620)
    _run(runs, f"{h}__train.batch_tokens=65536__train.max_steps=960", 1337, 1.47, {}, steps=960)
    _run(runs, f"{a}__train.batch_tokens=65536__train.max_steps=1240", 1337, 1.46, {}, steps=1240)
    _run(runs, f"{h}__model.rope_dims=16", 1337, 1.44, {})
    _run(runs, "other_config__model.xsa=true", 1337, 9.9, {})  # neither side's config: not read
    return tmp_path, pairs, runs


def test_runs_find_their_pairs_and_each_side_its_base(block):
    _, pairs, runs = block
    rows = lever_table.build_rows([runs], lever_table.read_pairs(pairs),
                                  {"hybrid": "hybrid_seed_fit", "attn": "attn_fit"}, (300, 375))
    assert [r["pair"] for r in rows] == [
        "none (base)", ["model.xsa=true", "model.xsa=true"],
        ["train.batch_tokens=65536 train.max_steps=960", "train.batch_tokens=65536 train.max_steps=1240"],
        ["model.rope_dims=16", ""]]  # the plain batch pair has no runs: the longer pair matched them
    base, xsa, batch, rope = rows
    assert base["hybrid"]["delta"] is None and base["hybrid"]["train_loss"] == pytest.approx(2.7)  # steps 300, 375
    assert xsa["hybrid"]["n"] == 2 and xsa["hybrid"]["val_bpb"] == pytest.approx(1.454)  # two seeds averaged
    assert xsa["hybrid"]["delta"] == pytest.approx(0.004) and xsa["hybrid"]["tok_per_s"] == pytest.approx(2000.0)
    assert xsa["hybrid"]["train_loss"] == pytest.approx(2.6) and xsa["attn"]["train_loss"] is None
    assert xsa["attn"]["delta"] == pytest.approx(-0.01)
    assert batch["hybrid"]["steps"] == 960 and batch["attn"]["delta"] == pytest.approx(0.02)
    assert "attn" not in rope and rope["hybrid"]["delta"] == pytest.approx(-0.01)


def test_main_prints_a_markdown_table(block, capsys):
    tmp_path, pairs, runs = block
    out_json = tmp_path / "t.json"
    assert lever_table.main([str(runs), "--pairs", str(pairs), "--json", str(out_json)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| pair: hybrid \\| attention | hybrid val BPB | Δ |")
    assert {len(re.findall(r"(?<!\\)\|", line)) for line in lines} == {11}  # 10 columns, no unescaped pipe in a cell
    assert lines[2] == "| none (base) | 1.45000 | — | 1.44000 | — | 1,000 | 1,000 | 480 / 620 | 2.700 / 2.700 | 1 / 1 |"
    assert lines[3].startswith("| `model.xsa=true` \\| `model.xsa=true` | 1.45400 | +0.0040 | 1.43000 | -0.0100 |")
    assert lines[5].startswith("| `model.rope_dims=16` \\| (none) | 1.44000 | -0.0100 | — | — |")
    assert len(json.loads(out_json.read_text())) == 4


def test_the_real_pairs_script_parses():
    pairs = lever_table.read_pairs(lever_table.PAIRS_SCRIPT)
    assert pairs[0] == (frozenset(), frozenset()) and len(pairs) % 3 == 0  # PART slices of three
    assert (frozenset({"model.xsa=true"}),) * 2 == pairs[2]


def test_the_mamba_mlp_pairs_file_parses_as_the_script_reads_it():
    """bench/h200/pairs_mamba_mlp.txt: the base first, each pair as lever_pairs.sh's PAIRS_FILE reading gives it
    (tests/test_h200_env.py checks that side), the last one the heads pair on both sides."""
    pairs = lever_table.read_pairs(lever_table.PAIRS_SCRIPT.parent / "pairs_mamba_mlp.txt")
    assert pairs[0] == (frozenset(), frozenset()) and len(pairs) == 10
    heads = frozenset({"model.num_heads=4", "model.num_kv_heads=2"})
    assert pairs[-1] == (heads, heads)
    assert pairs[1] == (frozenset({"model.layer_pattern=MMMAMMMAMMA", "model.mamba_mlp_mult=2.0"}),
                        frozenset({"model.num_heads=4", "model.num_kv_heads=2"}))


@pytest.mark.parametrize("case, message", [
    ("duplicate", "error: two hybrid runs for the same pair: "),
    ("empty", "error: no runs of hybrid_seed_fit or attn_fit under "),
    ("steps", "error: --loss-steps must be two whole numbers, first,last; got '300'"),
    ("missing", "error: not a folder: "),
])
def test_bad_input_gets_one_line(block, capsys, case, message):
    tmp_path, pairs, runs = block
    args = [str(runs), "--pairs", str(pairs)]
    if case == "duplicate":  # the same pair from two blocks' folders
        _run(tmp_path / "other", "hybrid_seed_fit__model.xsa=true", 1337, 1.5, {})
        args.insert(1, str(tmp_path / "other"))
    elif case == "empty":
        (tmp_path / "nothing").mkdir()
        args[0] = str(tmp_path / "nothing")
    elif case == "steps":
        args += ["--loss-steps", "300"]
    else:
        args[0] = str(tmp_path / "absent")
    assert lever_table.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1
