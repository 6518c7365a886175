"""Score one packaged artifact under several eval settings, timing each (bench/RESULTS.md; GPU, not CI).

Loads the model from ARTIFACT exactly as the eval stages do (golf.evaluate.load_eval_inputs) and the val shards
of DATA, then runs the variants in order: sliding windows (seq_len, stride, batch_seqs), stateful segments
(seq_len, segments) and TTT settings. Each TTT variant is a set of changes to a base TTT config (the params
file's `ttt` section with --params, else golf's TTTConfig defaults) and starts from a fresh copy of the
artifact's model, so variants never see each other's adaptation. The first variant warms the kernels (Triton
JIT/autotune) on a 64-window slice before any timing.

    python bench/eval_variants.py runs/1337/artifact data/sp1024                 # the default variants below
    python bench/eval_variants.py ART DATA -p configs/attn_fit.yaml --sliding '[]' --stateful '[]' \\
        --ttt '[{}, {"lr": 0.01}, {"params": "norms"}]'                         # TTT levers on the config's TTT
    MAX_TOKENS=9000 python bench/eval_variants.py ...                            # CPU dry run on a val prefix

Writes --out (default $OUT/eval_variants.json when OUT is set) after every variant, and prints one JSON line per
variant.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from golf.config import ConfigError, TTTConfig, load_params
from golf.evaluate import eval_bpb, eval_stateful, load_eval_inputs
from golf.io import write_text_atomic
from golf.ttt import ttt_eval

# (seq_len, stride, batch_seqs)
SLIDING = [(2048, 2048, 64), (2048, 64, 64), (2048, 128, 64), (2048, 256, 64), (1024, 64, 64)]
STATEFUL = [(2048, 64), (1024, 64)]  # (seq_len, segments)
TTT = [{}, {"lr": 0.005}, {"lr": 0.01}, {"stride": 256}, {"lr": 0.005, "stride": 256},
       {"params": "norms", "lr": 0.01}]


def _json_list(name: str, text: str, item_len: int | None) -> list:
    """--sliding / --stateful (lists of number lists of item_len) and --ttt (a list of objects)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise SystemExit(f"error: {name} must be a JSON list, got {text!r} ({e.msg})") from None
    want = f"lists of {item_len} integers" if item_len else "objects of TTT settings"
    ok = isinstance(value, list) and all(
        (isinstance(v, list) and len(v) == item_len and all(isinstance(x, int) for x in v)) if item_len
        else isinstance(v, dict) for v in value)
    if not ok:
        raise SystemExit(f"error: {name} must be a JSON list of {want}, got {text!r}")
    return value


def ttt_variants(base: TTTConfig, changes: list[dict]) -> list[TTTConfig]:
    """Each change applied to base, checked up front (a typo fails before any GPU time is spent)."""
    fields = {f.name for f in dataclasses.fields(TTTConfig)}
    out = []
    for change in changes:
        unknown = sorted(set(change) - fields)
        if unknown:
            raise SystemExit(f"error: --ttt variant {change} names unknown TTT settings {unknown}; known: "
                             f"{sorted(fields)}")
        out.append(dataclasses.replace(base, **change))
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("artifact", help="a packaged artifact folder (runs/<seed>/artifact)")
    ap.add_argument("data", help="a prepared data folder with the val shards and tokenizer (data/<name>)")
    ap.add_argument("-p", "--params", default=None, help="params file whose ttt section is the TTT base")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="params override, e.g. ttt.lr=0.01")
    ap.add_argument("--sliding", default=json.dumps(SLIDING), help="JSON [[seq_len, stride, batch_seqs], ...]")
    ap.add_argument("--stateful", default=json.dumps(STATEFUL), help="JSON [[seq_len, segments], ...]")
    ap.add_argument("--ttt", default=json.dumps(TTT), help="JSON [{ttt setting: value, ...}, ...] ({} = the base)")
    ap.add_argument("--out", default=None, help="JSON output (default $OUT/eval_variants.json when OUT is set)")
    args = ap.parse_args(argv)
    sliding = _json_list("--sliding", args.sliding, 3)
    stateful = _json_list("--stateful", args.stateful, 2)
    try:
        base = load_params(args.params, args.sets).ttt if args.params else TTTConfig()
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None
    ttts = ttt_variants(base, _json_list("--ttt", args.ttt, None))

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    max_tokens = int(os.environ.get("MAX_TOKENS", "0"))  # 0 = the whole val set; a cap for a CPU dry run
    model, val, tables = load_eval_inputs(args.artifact, args.data, dev, max_tokens, 2048)
    device_name = torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"
    out: dict = {"artifact": args.artifact, "params": args.params, "sets": args.sets, "val_tokens": int(val.numel()),
                 "device": device_name, "torch": torch.__version__, "kernel_paths": model.kernel_paths,
                 "results": []}
    warm = min(val.numel(), 64 * 2048 + 1)
    eval_bpb(model, val[:warm], tables, min(2048, warm - 1), 64)  # warm-up, not recorded

    dest = args.out or (str(Path(os.environ["OUT"], "eval_variants.json")) if os.environ.get("OUT") else None)

    def record(kind: str, settings: dict, res: dict) -> None:
        row = {"kind": kind, **settings, "val_bpb": res["val_bpb"], "val_loss": res["val_loss"],
               "eval_s": res["eval_s"], "tokens": res["tokens"]}
        out["results"].append(row)
        print(json.dumps(row), flush=True)
        if dest:  # after every variant: a device call cut short still returns what finished
            write_text_atomic(dest, json.dumps(out, indent=1))

    for seq, stride, bs in sliding:
        record("sliding", {"seq_len": seq, "stride": stride, "batch_seqs": bs},
               eval_bpb(model, val, tables, seq, bs, stride=stride))
    for seq, segs in stateful:
        record("stateful", {"seq_len": seq, "segments": segs}, eval_stateful(model, val, tables, seq, segs))
    for cfg in ttts:
        fresh = copy.deepcopy(model)
        record("ttt", dataclasses.asdict(cfg), ttt_eval(fresh, val, tables, cfg, dev))
        del fresh
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return out


if __name__ == "__main__":
    main()
