"""Where one block's time goes: an attention block (A: attention + MLP) or a Mamba-2 block (M) of a config,
forward+backward under bf16 autocast with the residual stream in the config's dtype (as training runs it),
profiled with torch.profiler: the top ops by device time and, for A, the dtypes and strides that reach SDPA
(flash / efficient / cudnn / math shows in the op names): which kernels a block's step spends its time in, and
whether attention reaches a fused SDPA kernel.

    python bench/profile_block.py [configs/hybrid_12.yaml] [A|M] [batch] [seq]   # JSON to $OUT/profile_<kind>.json
    python bench/profile_block.py configs/hybrid_seed_fit.yaml M 64 2048 --set model.ssm_scan=golf

The M block gets the config's SSM kernels (model.ssm_backend, ssm_compile, gated_norm, ssm_scan, ssm_conv), the A
block its attention backend (model.attn_backend), as golf.model builds them; eager, no torch.compile, and without
the residual glue of model.block_norm.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from golf.attention import resolve_attn_backend
from golf.config import load_params
from golf.io import write_text_atomic
from golf.model import AttentionBlock, MambaBlock
from golf.ssm import resolve_ssm_backend


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", nargs="?", default="configs/hybrid_12.yaml")
    ap.add_argument("kind", nargs="?", default="A", choices=("A", "M"), help="attention+MLP (A) or Mamba-2 (M)")
    ap.add_argument("batch", nargs="?", type=int, default=32)
    ap.add_argument("seq", nargs="?", type=int, default=2048)
    ap.add_argument("--set", dest="sets", action="append", default=[], help="params override, e.g. model.ssm_scan=golf")
    args = ap.parse_args()
    cfg = load_params(args.config, args.sets).model
    kind, bsz, seq = args.kind, args.batch, args.seq
    cuda = torch.cuda.is_available()
    dev = torch.device("cuda" if cuda else "cpu")
    # the block as golf.model.GolfLM builds it: the config's SSM kernels (ssm_compile, gated_norm, ssm_scan, ssm_conv)
    # or attention backend; the reference path and SDPA on a CPU
    if kind == "M":
        kernels = resolve_ssm_backend(cfg.ssm_backend if cuda else "reference", dev, cfg.ssm_compile, cfg.gated_norm,
                                      cfg.ssm_scan, cfg.ssm_conv)
        block = MambaBlock(cfg, kernels).to(dev)
    else:
        attn_path, flash_fn = resolve_attn_backend(cfg.attn_backend if cuda else "sdpa", dev)
        block = AttentionBlock(cfg, attn_path, flash_fn).to(dev)
    stream = torch.bfloat16 if cfg.residual_dtype == "autocast" else torch.float32
    x = torch.randn(bsz, seq, cfg.d_model, device=dev, dtype=stream, requires_grad=True)  # (B, T, d) residual
    x0 = torch.randn(bsz, seq, cfg.d_model, device=dev, dtype=stream)
    seen: list[dict] = []
    sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, *args, **kwargs):
        if len(seen) < 1:
            seen.append({"dtypes": [str(t.dtype) for t in (q, k, v)], "shapes": [list(t.shape) for t in (q, k, v)],
                         "strides": [list(t.stride()) for t in (q, k, v)], "kwargs": sorted(kwargs)})
        return sdpa(q, k, v, *args, **kwargs)

    F.scaled_dot_product_attention = spy
    ctx = torch.autocast(dev.type, dtype=torch.bfloat16)

    def step():
        with ctx:
            y = block(x, x0)
        y.float().square().mean().backward()

    for _ in range(3):
        step()
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(5):
        step()
    if cuda:
        torch.cuda.synchronize()
    ms = (time.perf_counter() - t0) / 5 * 1e3
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        for _ in range(3):
            step()
        if cuda:
            torch.cuda.synchronize()
    key = "device_time_total" if cuda else "cpu_time_total"
    rows = []
    for e in sorted(prof.key_averages(), key=lambda e: getattr(e, key, 0.0), reverse=True)[:30]:
        rows.append({"op": e.key, "calls": e.count, "ms_per_step": getattr(e, key, 0.0) / 1e3 / 3})
    out = {"device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__, "block": kind,
           "kernel_path": block.mixer.kernels.label if kind == "M" else attn_path, "stream_dtype": str(stream),
           "batch": bsz, "seq": seq, "fwd_bwd_ms": ms, "sdpa_inputs": seen, "top_ops": rows}
    print(json.dumps({k: v for k, v in out.items() if k != "top_ops"}, indent=1))
    for r in rows:
        print(f"{r['ms_per_step']:9.3f} ms  {r['calls'] // 3:5d}x  {r['op'][:90]}")
    if os.environ.get("OUT"):
        write_text_atomic(Path(os.environ["OUT"], f"profile_{kind}.json"), json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
