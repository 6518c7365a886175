"""GPU parity and speed of the model's kernel paths (run on the H200; not part of CI).

1. Parity: the Mamba-2 mixer of the seed config with each available fast path ("triton", "fused",
   "triton-opaque": the triton kernels as golf's custom ops, model.ssm_compile opaque, eager and
   "triton-opaque-compiled" under torch.compile(fullgraph=True)) against the pure-PyTorch reference on the
   same weights and inputs, fp32 and bf16 autocast: relative L2 error of the output, the input gradient and
   every parameter gradient; plus carried state vs one pass.
2. Speed, forward+backward under bf16 autocast: one M block per SSM path and one A block (attention + MLP)
   at 32 x 2048 tokens. Whole-model training throughput is bench/train_throughput.py's.

    python bench/parity_gpu.py                       # everything (a minute or so)
    python bench/parity_gpu.py --skip-parity         # single-block timings only
    python bench/parity_gpu.py --set model.gated_norm=torch --skip-blocks   # the triton path's PyTorch norm
    python bench/parity_gpu.py --paths triton-opaque,triton-opaque-compiled --skip-blocks   # opaque ops alone

Prints a table per part; writes $OUT/parity_gpu.json when OUT is set. Every case is caught and reported on
its own, so one failing kernel does not hide the others.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import os
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from golf.config import load_params
from golf.errors import GolfError
from golf.io import write_text_atomic
from golf.model import build_model
from golf.runtime import enable_tf32
from golf.ssm import Mamba2Mixer, resolve_ssm_backend

REPO = Path(__file__).resolve().parents[1]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30))


def case(results: dict, key: str, fn) -> None:
    """Run one case; record its result or its error under `key` and keep going."""
    try:
        results[key] = fn()
    except Exception as e:  # noqa: BLE001 -- a bench reports every failure and carries on
        results[key] = {"error": repr(e)}
        print(f"  {key}: FAILED {e!r}", flush=True)
        traceback.print_exc(limit=3)
    finally:
        torch.cuda.empty_cache()


def timed(step, iters: int, warmup: int) -> float:
    """Seconds per call of step() (CUDA-synchronized), after warm-up calls (JIT, autotune, compile)."""
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / iters


# --------------------------------------------------------------------------------------------------
# 1. parity
# --------------------------------------------------------------------------------------------------


def resolve_path(path: str, dev, gated_norm: str, scan: str = "mamba", conv: str = "causal_conv1d"):
    """A --paths entry's kernels: "reference", "triton", "fused", or "triton-opaque" (its "-compiled" suffix
    is mixer_parity's business). The fused op has its own norm, scan and conv, so gated_norm, scan and conv (the
    config's model.ssm_scan / ssm_conv: the libraries' kernels or golf's own) apply to the triton paths."""
    base = path.removesuffix("-compiled")
    if base == "triton-opaque":
        return resolve_ssm_backend("triton", dev, "opaque", gated_norm, scan, conv)
    if base == "triton":
        return resolve_ssm_backend(base, dev, gated_norm=gated_norm, scan=scan, conv=conv)
    return resolve_ssm_backend(base, dev)


def mixer_parity(mc, path: str, dtype: torch.dtype, batch: int, seqlen: int) -> dict:
    dev = torch.device("cuda")
    kernels = resolve_path(path, dev, mc.gated_norm, mc.ssm_scan, mc.ssm_conv)
    torch.manual_seed(0)
    args = (mc.d_model, mc.d_state, mc.d_conv, mc.expand, mc.headdim, mc.ngroups, mc.chunk_size)
    ref = Mamba2Mixer(*args, in_proj_multiple=mc.in_proj_multiple).to(dev)
    torch.nn.init.normal_(ref.out_proj.weight, std=mc.d_model ** -0.5)  # zero at init: make it count
    fast = Mamba2Mixer(*args, kernels=kernels, in_proj_multiple=mc.in_proj_multiple).to(dev)
    fast.load_state_dict(ref.state_dict())
    u = torch.randn(batch, seqlen, mc.d_model, device=dev)
    torch._dynamo.reset()
    fast_run = torch.compile(fast, fullgraph=True) if path.endswith("-compiled") else fast  # shares fast's weights
    outs = {}
    for name, m, run in (("ref", ref, ref), ("fast", fast, fast_run)):
        x = u.clone().requires_grad_(True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            y = run(x)
        y.float().square().mean().backward()
        outs[name] = (y.detach(), x.grad.detach(), {k: p.grad.detach().clone() for k, p in m.named_parameters()})
    r = {"path": kernels.label + (", compiled" if fast_run is not fast else ""),
         "out": rel(outs["fast"][0], outs["ref"][0]),
         "d_input": rel(outs["fast"][1], outs["ref"][1])}
    r.update({f"d_{k}": rel(outs["fast"][2][k], outs["ref"][2][k]) for k in outs["ref"][2]})
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        full = fast(u)
        half = seqlen // 2 + 3  # not a chunk boundary
        a, st = fast(u[:, :half], return_state=True)
        b = fast(u[:, half:], state=st)
        ref_full = ref(u)
    r["stateful_vs_one_pass"] = rel(torch.cat([a, b], 1), full)
    r["stateful_vs_reference"] = rel(torch.cat([a, b], 1), ref_full)
    return r


def parity(results: dict, mc, paths: list[str]) -> None:
    print("\n== mixer parity: fast vs reference (relative L2 error) ==", flush=True)
    for path in paths:
        for dtype in (torch.float32, torch.bfloat16):
            key = f"parity/{path}/{str(dtype).split('.')[-1]}"
            case(results, key, lambda path=path, dtype=dtype: mixer_parity(mc, path, dtype, 4, 1000))
            r = results[key]
            if "error" not in r:
                worst = max((k for k in r if k.startswith("d_")), key=lambda k: r[k])
                print(f"  {key:<28} {r['path']:<22} out {r['out']:.1e}  d_input {r['d_input']:.1e}  "
                      f"worst grad {worst} {r[worst]:.1e}  stateful {r['stateful_vs_one_pass']:.1e}", flush=True)


# --------------------------------------------------------------------------------------------------
# 2. speed
# --------------------------------------------------------------------------------------------------


def block_time(mc, kind: str, backend: str, batch: int, seqlen: int, iters: int) -> dict:
    """One block, eager (an opaque path's time here is its kernels plus the ops' dispatch, not what
    torch.compile makes of it: bench/train_throughput.py measures that)."""
    dev = torch.device("cuda")
    opaque = backend.startswith("triton-opaque")
    cfg = dataclasses.replace(mc, layer_pattern=kind, ssm_backend=("triton" if opaque else backend) if kind == "M"
                              else "auto", ssm_compile="opaque" if opaque else "disable",  # eager: = "trace"
                              gated_norm=mc.gated_norm if backend == "triton" or opaque else "kernel",
                              bigram_buckets=0, bigram_dim=0, unet_skips=False)
    model = build_model(cfg, dev)
    blk = model.blocks[0]
    stream = torch.bfloat16 if mc.residual_dtype == "autocast" else torch.float32  # as training feeds blocks
    x = torch.randn(batch, seqlen, mc.d_model, device=dev, dtype=stream, requires_grad=True)  # (B, T, d)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y = blk(x, x)
        y.float().sum().backward()

    torch.cuda.reset_peak_memory_stats()
    dt = timed(step, iters, 3)
    return {"path": model.kernel_paths["ssm" if kind == "M" else "attn"], "ms": dt * 1e3,
            "tok_per_s": batch * seqlen / dt, "peak_mem_mb": torch.cuda.max_memory_allocated() / 2**20}


def blocks(results: dict, mc, ssm_paths: list[str], iters: int, chunk_sizes: list[int]) -> None:
    """Time one M block per SSM path (and per SSD chunk size: the same function, computed in chunks of
    that many tokens) and one A block."""
    stream = "bf16" if mc.residual_dtype == "autocast" else "fp32"
    print(f"\n== one block, forward+backward, bf16 autocast, {stream} residual stream, 32 x 2048 tokens ==",
          flush=True)
    cases = [("M", p, c) for p in ssm_paths for c in chunk_sizes] + [("A", "auto", mc.chunk_size)]
    for kind, backend, chunk in cases:
        key = f"block/{kind}/{backend}" + (f"/chunk{chunk}" if kind == "M" else "")
        cfg = dataclasses.replace(mc, chunk_size=chunk)
        case(results, key, lambda kind=kind, backend=backend, cfg=cfg: block_time(cfg, kind, backend, 32, 2048,
                                                                                 iters))
        r = results[key]
        if "error" not in r:
            print(f"  {key:<28} {r['path']:<22} {r['ms']:8.2f} ms  {r['tok_per_s'] / 1e6:7.2f} Mtok/s  "
                  f"peak {r['peak_mem_mb']:8.0f} MB", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=str(REPO / "configs" / "hybrid_seed.yaml"))
    ap.add_argument("--paths", default="reference,triton,fused,triton-opaque,triton-opaque-compiled",
                    help="SSM paths for parity and block timing (triton-opaque: model.ssm_compile opaque; "
                         "-compiled: the mixer under torch.compile(fullgraph=True), parity only)")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--chunk-sizes", default="", help="SSD chunk sizes for the M-block timings (default: the config's)")
    ap.add_argument("--skip-parity", action="store_true")
    ap.add_argument("--skip-blocks", action="store_true")
    ap.add_argument("--set", dest="sets", action="append", default=[],
                    help="params override, e.g. model.in_proj_multiple=64")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("parity_gpu.py needs a CUDA device")
    enable_tf32()  # as in training

    mc = load_params(args.config, args.sets).model
    paths = [p for p in args.paths.split(",") if p]
    available = []
    for p in paths:
        if p != "reference":
            try:
                resolve_path(p, "cuda", mc.gated_norm, mc.ssm_scan, mc.ssm_conv)
            except GolfError as e:
                print(f"SSM path {p!r} not available: {e}", flush=True)
                continue
        available.append(p)
    results: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "config": args.config,
                     "available_ssm_paths": available, "args": vars(args)}
    for dist in ("triton", "mamba-ssm", "causal-conv1d", "flash-attn", "flash-attn-3"):
        try:  # metadata, not import: mamba-ssm's package __init__ may not import (see golf/ssm.py)
            results[f"version/{dist}"] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            results[f"version/{dist}"] = None
    print(json.dumps({k: v for k, v in results.items() if k != "args"}, indent=1), flush=True)

    if not args.skip_parity:
        parity(results, mc, [p for p in available if p != "reference"])
    if not args.skip_blocks:
        chunks = [int(c) for c in args.chunk_sizes.split(",") if c] or [mc.chunk_size]
        blocks(results, mc, [p for p in available if not p.endswith("-compiled")], args.iters * 4, chunks)

    if os.environ.get("OUT"):
        out = Path(os.environ["OUT"], "parity_gpu.json")
        write_text_atomic(out, json.dumps(results, indent=2, default=str))
        print(f"\nwrote {out}", flush=True)


if __name__ == "__main__":
    main()
