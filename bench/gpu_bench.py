"""GPU benchmark (run on the H200; not part of CI): eager training throughput of the seed hybrid and the attention-only baseline at seq 1024 / 2048 / 8192.

The mixer parity part that produced results/2026-11-28_gpu_bench.json moved to bench/parity_gpu.py when the
mixer took a kernel set (`kernels=`) instead of `backend=`/`ssd_fn=`.

    python bench/gpu_bench.py            # prints a table; writes $OUT/gpu_bench.json when OUT is set
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from golf.config import load_params  # noqa: E402
from golf.model import build_model, count_params  # noqa: E402


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30))


def time_fwd_bwd(fn, iters=10, warmup=3) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    t0 = time.time()
    for _ in range(iters):
        fn()
    torch.cuda.synchronize()
    return (time.time() - t0) / iters


def throughput(results: dict, micro_tokens: int = 131072) -> None:
    dev = torch.device("cuda")
    for cfg_path in ("configs/hybrid_seed.yaml", "configs/baseline_attn.yaml"):
        p = load_params(cfg_path)
        torch.manual_seed(0)
        model = build_model(p.model, dev)
        n_params = count_params(model)
        for seq in (1024, 2048, 8192):
            B = micro_tokens // seq
            x = torch.randint(0, p.model.vocab_size, (B, seq), device=dev)

            def step():
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    logits = model(x)
                F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), x.reshape(-1)).backward()

            try:
                dt = time_fwd_bwd(step)
                tps = micro_tokens / dt
                results[f"tok_s_{Path(cfg_path).stem}_seq{seq}"] = tps
                print(f"{Path(cfg_path).stem:<14} params {n_params:>11,} seq {seq:>5} B {B:>3}: "
                      f"{dt * 1e3:8.1f} ms / {micro_tokens} tok = {tps / 1e6:.3f} Mtok/s (eager)", flush=True)
            except Exception as e:  # keep going: one failing size should not hide the rest
                print(f"{cfg_path} seq {seq} failed: {e!r}", flush=True)
            model.zero_grad(set_to_none=True)
        del model
        torch.cuda.empty_cache()
    # where the time goes: one block of each kind at 32 x 2048
    p = load_params("configs/hybrid_seed.yaml")
    model = build_model(p.model, dev)
    x = torch.randn(32, 2048, 512, device=dev, requires_grad=True)
    for name, blk in (("M block", model.blocks[0]), ("A block", model.blocks[12])):
        def step(blk=blk):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                y = blk(x, x)
            y.float().sum().backward()
        dt = time_fwd_bwd(step)
        results[f"ms_{name.replace(' ', '_')}"] = dt * 1e3
        print(f"{name} fwd+bwd 32x2048: {dt * 1e3:.2f} ms", flush=True)


def main() -> None:
    results: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    for part in (throughput,):
        try:
            part(results)
        except Exception as e:
            print(f"{part.__name__} failed: {e!r}", flush=True)
            results[f"{part.__name__}_error"] = repr(e)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_bench.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
