"""golf::qk_norm_rope (golf/qk_rope_kernel.py, model.qk_rope "golf") against torch.compile of the PyTorch
expressions it replaces (GQAttention's per-head RMSNorm, RoPE and query gain, model.qk_rope "torch"): the device
time of one attention layer's queries and keys, forward and backward, the bytes each direction must move, and
each side's max relative error against the fp32 expressions. Prints one JSON line; --json writes it too.

    python3 bench/qk_rope_bench.py --json $OUT/qk_rope.json          # hybrid_12_b131k's shapes, bf16
    python3 bench/qk_rope_bench.py --dry-run                         # tiny shapes on the CPU (the tests)

Shapes (defaults): 64 x 2048 tokens, 8 query heads and 4 key heads of 64 channels, RoPE on all of them
(--rope-dims), bf16 activations with fp32 tables and gain, as training runs them. Device time: the kernels each
side launches over --reps calls under torch.profiler (bench/kernel_bench.py device_ms). The floor: the forward
reads x and writes y, the backward reads dy and x and writes dx, once each.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from kernel_bench import device_ms, print_and_write, rel_errs


def torch_path(x, cos, sin, gain):
    """GQAttention's own expressions for x (B, T, H, D) (golf.attention.norm_rope_gain, model.qk_rope "torch")."""
    from golf.attention import norm_rope_gain

    T = x.shape[1]
    return norm_rope_gain(x, cos[:T], sin[:T], gain)


def _with_launch(qk_rope_kernel, launch, run):
    """run() with golf's launch defaults set to launch = (block_m, num_warps) (None: as they are), forward and
    backward alike."""
    if launch is None:
        return run()
    saved = qk_rope_kernel.BLOCK_M, qk_rope_kernel.NUM_WARPS
    qk_rope_kernel.BLOCK_M, qk_rope_kernel.NUM_WARPS = launch
    try:
        return run()
    finally:
        qk_rope_kernel.BLOCK_M, qk_rope_kernel.NUM_WARPS = saved


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--rope-dims", type=int, default=0, help="rotated channels a head (0: all)")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--launches", default="", help="golf's launches to time beside its default, as BLOCK_MxWARPS "
                                                    "items, comma-separated (e.g. 16x2,64x8)")
    ap.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU, no torch.compile")
    ap.add_argument("--json", default="")
    a = ap.parse_args(argv)
    if a.dry_run:
        a.batch, a.seq, a.heads, a.kv_heads, a.head_dim, a.reps = 2, 16, 2, 1, 16, 2
    rope_dims = a.rope_dims or a.head_dim
    if min(a.batch, a.seq, a.heads, a.kv_heads, a.head_dim, a.reps) < 1 or rope_dims % 2 or rope_dims > a.head_dim:
        ap.error("sizes must be positive and --rope-dims even and at most --head-dim")
    try:
        launches = [tuple(int(v) for v in item.split("x")) for item in a.launches.split(",") if item]
        if any(len(x) != 2 or min(x) < 1 or x[0] & (x[0] - 1) or x[1] & (x[1] - 1) for x in launches):
            raise ValueError
    except ValueError:
        ap.error(f"--launches {a.launches!r}: expected BLOCK_MxWARPS items of powers of two, such as 32x4")
    device = "cpu" if a.dry_run else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        ap.error("needs a CUDA device (or --dry-run)")
    if device == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        ap.error("--dry-run runs golf's kernels in Triton's interpreter: set TRITON_INTERPRET=1")
    from golf import qk_rope_kernel
    from golf.attention import rope_tables
    from golf.qk_rope_kernel import qk_norm_rope

    dtype = torch.float32 if a.dry_run else torch.bfloat16
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(a.batch, a.seq, a.heads, a.head_dim, generator=gen).to(device, dtype)
    k = torch.randn(a.batch, a.seq, a.kv_heads, a.head_dim, generator=gen).to(device, dtype)
    dq, dk = torch.randn_like(q), torch.randn_like(k)
    gain = (1.5 + 0.3 * torch.randn(a.heads, generator=gen)).to(device)
    cos, sin = rope_tables(a.seq, rope_dims, 10000.0, device)

    def layer(fn):
        """One layer's queries and keys, forward and backward → (yq, yk, dq, dk, dgain)."""
        ql, kl, gl = (t.detach().requires_grad_(True) for t in (q, k, gain))
        yq, yk = fn(ql, cos, sin, gl), fn(kl, cos, sin, None)
        torch.autograd.backward([yq, yk], [dq, dk])
        return yq, yk, ql.grad, kl.grad, gl.grad

    names = ("yq", "yk", "dq", "dk", "dgain")
    want = dict(zip(names, (t.float() for t in layer(lambda x, c, s, g: torch_path(x.float(), c, s, g)))))
    sides = {"golf": (qk_norm_rope, None),
             "torch_compile": (torch_path if a.dry_run else torch.compile(torch_path), None),
             **{f"golf_{bm}x{nw}": (qk_norm_rope, (bm, nw)) for bm, nw in launches}}
    elements = q.numel() + k.numel()
    moved = {"fwd": 2 * elements * q.element_size(), "bwd": 3 * elements * q.element_size()}
    out = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__,
           "shape": {"batch": a.batch, "seq": a.seq, "heads": a.heads, "kv_heads": a.kv_heads,
                     "head_dim": a.head_dim, "rope_dims": rope_dims, "dtype": str(dtype).split(".")[-1]},
           "bytes_fwd_bwd": moved["fwd"] + moved["bwd"], "sides": {}}
    for name, (fn, launch) in sides.items():
        def run(fn=fn, launch=launch):
            return _with_launch(qk_rope_kernel, launch, lambda: layer(fn))

        got = dict(zip(names, (t.float() for t in run())))
        ms = device_ms(run, device, a.reps)
        out["sides"][name] = {"ms_fwd_bwd": round(ms, 4), "gb_per_s": round(out["bytes_fwd_bwd"] / ms / 1e6, 1),
                              "rel_err": {k: float(f"{v:.2e}") for k, v in rel_errs(got, want).items()}}
    return print_and_write(out, a.json)


if __name__ == "__main__":
    main()
