"""ATen ops dispatched by one optimizer step (golf.train.optimizer_step: Muon, AdamW, EMA, zero_grad) of a full-size
config, counted on CPU under torch.profiler: a proxy for the host's kernel launches on CUDA, where the optimizer
runs eagerly and every op costs the host its dispatch whether or not the device is busy. Only ops called from
Python are counted (an op another op calls inside itself is not). AdamW is forced to the implementation CUDA
would take: `--adamw foreach` (PyTorch's default on CUDA before commit 27da4fc) or `fused` (since).

    python bench/optimizer_ops.py configs/hybrid_12_b131k.yaml --adamw fused
    python bench/optimizer_ops.py configs/hybrid_12_b262k.yaml --set train.batch_tokens=131072 \
        --tree .carry_old --adamw foreach  # the code of another commit

`--tree DIR` imports golf from another source tree (e.g. `git archive <commit> golf configs | tar -x -C DIR`)
and reads the config there. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--adamw", choices=("foreach", "fused"), required=True)
    ap.add_argument("--tree", default=str(Path(__file__).resolve().parents[1]),
                    help="source tree to import golf from; a relative config path is read there")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="params override, e.g. train.batch_tokens=131072")
    args = ap.parse_args(argv)
    tree = Path(args.tree).resolve()
    if not (tree / "golf" / "optim.py").is_file():
        ap.error(f"--tree {args.tree!r}: no golf/optim.py there")
    sys.path.insert(0, str(tree))
    import torch
    from torch.profiler import ProfilerActivity, profile

    from golf.config import load_params
    from golf.model import build_model
    from golf.optim import build_optimizers
    from golf.train import optimizer_step

    adamw = torch.optim.AdamW

    def adamw_as_on_cuda(*a, **k):  # the implementation CUDA would pick, on CPU tensors
        k.pop("fused", None), k.pop("foreach", None)
        return adamw(*a, **k, **({"fused": True} if args.adamw == "fused" else {"foreach": True}))

    params = load_params(tree / args.config, ["model.ssm_backend=reference", *args.sets])  # an absolute path stays
    model = build_model(params.model, "cpu")
    torch.optim.AdamW = adamw_as_on_cuda
    try:
        opts = build_optimizers(model, params.train)
    finally:
        torch.optim.AdamW = adamw
    ema = [p.detach().clone().float() for p in model.parameters()]
    for step in range(2):  # the first step creates the optimizer state; the second is counted
        for p in model.parameters():
            p.grad = torch.randn_like(p) * 1e-3
        if step == 0:
            optimizer_step(model, opts, params.train.grad_clip, ema, 0.997)
            continue
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            optimizer_step(model, opts, params.train.grad_clip, ema, 0.997)
    events = prof.events()
    top = [e for e in events if e.name.startswith("aten::")
           and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::"))]

    def within(name: str) -> int:
        ranges = [e.time_range for e in events if e.name == f"Optimizer.step#{name}.step"]
        return sum(any(r.start <= e.time_range.start and e.time_range.end <= r.end for r in ranges) for e in top)

    out = {"config": args.config, "tree": str(tree), "adamw": args.adamw, "muon_ops": within("Muon"),
           "adamw_ops": within("AdamW"), "optimizer_step_ops": len(top),
           "muon_shape_groups": sum(len({(tuple(p.shape), p.dtype) for g in o.param_groups for p in g["params"]})
                                    for o in opts if type(o).__name__ == "Muon")}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
