"""GPU benchmark (run on the H200; not part of CI): fast-vs-reference parity of the Mamba-2 mixer, and
training throughput of the seed hybrid and the attention-only baseline at seq 1024 / 2048 / 8192.

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
from golf.ssm import Mamba2Mixer, resolve_ssm_backend  # noqa: E402


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30))


def parity(results: dict) -> None:
    dev = torch.device("cuda")
    path, fn = resolve_ssm_backend("triton", dev)
    for dtype in (torch.float32, torch.bfloat16):
        torch.manual_seed(0)
        ref = Mamba2Mixer(512, 32, 4, 1.5, 64, 1, 64, backend="reference").to(dev)
        fast = Mamba2Mixer(512, 32, 4, 1.5, 64, 1, 64, backend="triton", ssd_fn=fn).to(dev)
        fast.load_state_dict(ref.state_dict())
        u = torch.randn(4, 1000, 512, device=dev)
        outs = {}
        for name, m in (("ref", ref), ("fast", fast)):
            x = u.clone().requires_grad_(True)
            with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
                y = m(x)
            y.float().square().mean().backward()
            outs[name] = (y.detach(), x.grad.detach(), {k: p.grad.detach().clone() for k, p in m.named_parameters()})
            m.zero_grad()
        r = {"out": rel(outs["fast"][0], outs["ref"][0]), "dx": rel(outs["fast"][1], outs["ref"][1])}
        r.update({f"d{k}": rel(outs["fast"][2][k], outs["ref"][2][k]) for k in ("in_proj.weight", "A_log", "dt_bias", "D")})
        results[f"parity_{str(dtype).split('.')[-1]}"] = r
        print(f"parity {dtype}: " + ", ".join(f"{k} {v:.2e}" for k, v in r.items()), flush=True)
    # stateful step on the fast path: two halves with carried state == one pass
    torch.manual_seed(1)
    u = torch.randn(2, 512, 512, device=dev)
    with torch.no_grad():
        full = fast(u)
        a, st = fast(u[:, :256], return_state=True)
        b = fast(u[:, 256:], state=st)
    results["parity_stateful_fast"] = rel(torch.cat([a, b], 1), full)
    print(f"stateful fast split-vs-full rel err {results['parity_stateful_fast']:.2e}", flush=True)


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
    for part in (parity, throughput):
        try:
            part(results)
        except Exception as e:
            print(f"{part.__name__} failed: {e!r}", flush=True)
            results[f"{part.__name__}_error"] = repr(e)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_bench.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
