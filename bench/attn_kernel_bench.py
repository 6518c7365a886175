"""The attention kernels golf can call, timed at its attention layers' shapes: PyTorch SDPA as golf calls it
(the backend SDPA picks itself, and each of its backends forced), and every flash-attn flavour that imports
(FlashAttention-4's `flash_attn.cute`, FlashAttention-3's `flash_attn_interface`, flash-attn 2's `flash_attn`), and
FA4 as golf calls it for model.attn_backend flash4 (`golf_flash4`: the custom op golf::flash4_attn, golf/attn_ops.py).

Each case is heads,kv_heads,head_dim (default 8,4,64: the hybrids' and attn_tuned_fit's layers; 4,2,128:
attn_tuned_h4_b65k_fit's), causal GQA on a (b, t) batch of bf16 q (B, T, H, D), k and v (B, T, Hkv, D), as golf's
GQAttention hands them to the kernel.

1. Parity. out and dq, dk, dv (for one random dout) of each kernel on the first --ref-b sequences against golf's
   reference attention (golf.attn_ops.attention_reference: explicit softmax in fp32 on the same bf16 inputs,
   with the KV heads repeated to the query heads, the grouping golf uses: query head h reads KV head
   h // (H / Hkv)): max |a - b| / max |b| per tensor. (The 2026-12-01 tenth block's runs used SDPA's math
   backend in fp32 as the target, the same math.) A kernel is timed
   only when every error is within --tol.
2. Time: median ms per call (triton.testing.do_bench) and device time per call (kernel_bench.device_ms), forward
   and forward+backward, with the TFLOP/s each reaches (causal: forward 2·B·H·T²·D multiply-adds' worth of
   FLOPs, backward 2.5 times that).

A kernel that is missing is listed as such; one that raises (a backend SDPA refuses for these inputs, a compile
error) is recorded with its error and the others go on. `--json` keeps the whole result.

    python bench/attn_kernel_bench.py                                   # both default cases, every kernel found
    python bench/attn_kernel_bench.py --cases 8,4,64 --impls sdpa,fa4 --json $OUT/attn.json

On a lent H200: `bash bench/h200/gpu_install.sh`, FlashAttention-4 from `bench/h200/fa4_stage.sh` (bench/README),
then this. --device cpu is a dry run (tiny shapes, fp32, SDPA's math backend only), timed with a wall clock.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from kernel_bench import (
    add_run_args,
    bencher,
    cuda_missing,
    device_ms,
    new_result,
    rel_errs,
    run_and_write,
    table,
)

GRADS = ("dq", "dk", "dv")
# name -> the module whose flash_attn_func it is; SDPA's own backends are handled in sdpa_fn
FLASH = {"fa4": "flash_attn.cute", "fa3": "flash_attn_interface", "fa2": "flash_attn"}
SDPA_BACKENDS = {"sdpa_cudnn": "CUDNN_ATTENTION", "sdpa_flash": "FLASH_ATTENTION",
                 "sdpa_efficient": "EFFICIENT_ATTENTION", "sdpa_math": "MATH"}
ALL_IMPLS = ("sdpa", *SDPA_BACKENDS, *FLASH, "golf_flash4")  # golf_flash4: FA4 through golf::flash4_attn


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--b", type=int, default=64, help="batch (sequences; default 64)")
    ap.add_argument("--t", type=int, default=2048, help="sequence length (default 2048)")
    ap.add_argument("--cases", default="8,4,64;4,2,128",
                    help="heads,kv_heads,head_dim per case, ';' between cases (default 8,4,64;4,2,128)")
    ap.add_argument("--impls", default=",".join(ALL_IMPLS),
                    help=f"kernels to try, comma-separated, of {', '.join(ALL_IMPLS)} (default all)")
    ap.add_argument("--ref-b", type=int, default=2, help="sequences in the fp32 parity check (default 2)")
    ap.add_argument("--tol", type=float, default=2e-2, help="largest relative error to time a kernel (default 0.02)")
    add_run_args(ap, warmup=50, rep=200, device_help="cuda (default) or cpu (a dry run, SDPA's math backend)")
    a = ap.parse_args(argv)
    a.case_list = [parse_case(c) for c in a.cases.split(";") if c.strip()]
    a.impl_list = [i.strip() for i in a.impls.split(",") if i.strip()]
    unknown = sorted(set(a.impl_list) - set(ALL_IMPLS))
    if unknown:
        ap.error(f"--impls: unknown {', '.join(unknown)}; expected some of {', '.join(ALL_IMPLS)}")
    return a


def parse_case(text: str) -> tuple[int, int, int]:
    try:
        h, hkv, d = (int(x) for x in text.split(","))
    except ValueError:
        raise SystemExit(f"error: --cases entry {text!r} is not heads,kv_heads,head_dim (three integers)") from None
    if h % hkv:
        raise SystemExit(f"error: --cases entry {text!r}: heads must be a multiple of kv_heads")
    return h, hkv, d


def flash_fn(name: str):
    """flash_attn_func of a flash-attn flavour, or None when it is not installed (golf.attention's own check, so
    FA4's `flash_attn` namespace package does not pass for flash-attn 2)."""
    from golf.attention import _import_flash

    return _import_flash(FLASH[name])


def sdpa_fn(backend: str | None):
    """q, k, v (B, T, H|Hkv, D) -> out (B, T, H, D) through SDPA as GQAttention calls it; `backend` names one of
    torch.nn.attention.SDPBackend's members to force, None lets SDPA choose."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def run(q, k, v):
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                             is_causal=True, enable_gqa=True)  # (B, H, T, D)
        return out.transpose(1, 2)

    if backend is None:
        return run

    def forced(q, k, v):
        with sdpa_kernel([getattr(SDPBackend, backend)]):
            return run(q, k, v)

    return forced


def kernel(name: str):
    """A callable q, k, v -> out (B, T, H, D) for `name`, or None when its package is missing."""
    if name == "sdpa":
        return sdpa_fn(None)
    if name in SDPA_BACKENDS:
        return sdpa_fn(SDPA_BACKENDS[name])
    if name == "golf_flash4":  # the op model.attn_backend flash4 calls (golf/attn_ops.py), on FA4's kernels
        if flash_fn("fa4") is None:
            return None
        from golf import attn_ops

        return attn_ops.flash_attn_func
    fn = flash_fn(name)
    if fn is None:
        return None

    def run(q, k, v):
        out = fn(q, k, v, causal=True)
        return out[0] if isinstance(out, tuple) else out  # FA4 and FA3 return (out, lse)

    return run


def reference(q, k, v):
    """The parity target: golf's reference attention (golf.attn_ops, explicit softmax over the repeated KV heads)
    in fp32 on the same inputs, (B, T, H, D)."""
    from golf.attn_ops import attention_reference

    return attention_reference(q.float(), k.float(), v.float())[0]


def outputs_and_grads(fn, q, k, v, dout) -> dict:
    q, k, v = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    out = fn(q, k, v)
    out.backward(dout.to(out.dtype))
    return {"out": out.detach().float(), "dq": q.grad.float(), "dk": k.grad.float(), "dv": v.grad.float()}


def flops(b: int, t: int, h: int, d: int) -> dict:
    """Causal attention's FLOPs: the forward's two matmuls over half the T x T scores, the backward 2.5 times
    the forward (its five matmuls)."""
    fwd = 2 * 2 * b * h * t * t * d / 2
    return {"fwd": fwd, "fwd_bwd": fwd * 3.5}


def time_kernel(a, fn, q, k, v, dout, fl: dict) -> dict:
    """Forward and forward+backward: do_bench's median ms, device ms per call and the TFLOP/s of the latter."""
    bench = bencher(a.device)
    qq, kk, vv = (t.detach().clone().requires_grad_(True) for t in (q, k, v))

    def fwd():
        with torch.no_grad():
            fn(qq, kk, vv)

    def fwd_bwd():
        fn(qq, kk, vv).backward(dout)

    t = {"fwd_ms": bench(fwd, warmup=a.warmup, rep=a.rep),
         "fwd_bwd_ms": bench(fwd_bwd, warmup=a.warmup, rep=a.rep, grad_to_none=(qq, kk, vv))}
    t["fwd_device_ms"] = device_ms(fwd, a.device)
    t["fwd_bwd_device_ms"] = device_ms(fwd_bwd, a.device, grad_to_none=(qq, kk, vv))
    t["fwd_tflops"] = fl["fwd"] / (t["fwd_device_ms"] * 1e9)
    t["fwd_bwd_tflops"] = fl["fwd_bwd"] / (t["fwd_bwd_device_ms"] * 1e9)
    return t


def measure_case(a, case, result: dict) -> list[list]:
    h, hkv, d = case
    key = f"h{h}_kv{hkv}_d{d}"
    dev = torch.device(a.device)
    dtype = torch.bfloat16 if a.device == "cuda" else torch.float32
    gen = torch.Generator(device=dev).manual_seed(0)
    q = torch.randn(a.b, a.t, h, d, device=dev, dtype=dtype, generator=gen)
    k = torch.randn(a.b, a.t, hkv, d, device=dev, dtype=dtype, generator=gen)
    v = torch.randn(a.b, a.t, hkv, d, device=dev, dtype=dtype, generator=gen)
    dout = torch.randn(a.b, a.t, h, d, device=dev, dtype=dtype, generator=gen)
    rb = min(a.ref_b, a.b)
    want = outputs_and_grads(reference, q[:rb], k[:rb], v[:rb], dout[:rb])
    fl = flops(a.b, a.t, h, d)
    result["parity"][key], result["timing"][key] = {}, {}
    rows = []
    for name in a.impl_list:
        if a.device != "cuda" and name not in ("sdpa", "sdpa_math"):
            continue  # the dry run: only the math backend exists on a CPU
        fn = kernel(name)
        if fn is None:
            result["timing"][key][name] = "not installed"
            rows.append([key, name, "not installed", "", "", "", "", ""])
            continue
        try:
            errs = rel_errs(outputs_and_grads(fn, q[:rb], k[:rb], v[:rb], dout[:rb]), want)
        except Exception as e:  # noqa: BLE001 -- a refused backend is a result, the others go on
            result["errors"][f"{key}/{name}"] = repr(e)[:500]
            rows.append([key, name, f"error: {repr(e)[:80]}", "", "", "", "", ""])
            continue
        result["parity"][key][name] = errs
        worst = max(errs.values())
        if worst > a.tol:
            result["errors"][f"{key}/{name}"] = f"parity: {errs}"
            rows.append([key, name, f"off: {worst:.3g}", "", "", "", "", ""])
            continue
        t = time_kernel(a, fn, q, k, v, dout, fl)
        result["timing"][key][name] = t
        rows.append([key, name, f"{worst:.2g}", f"{t['fwd_ms']:.3f}", f"{t['fwd_device_ms']:.3f}",
                     f"{t['fwd_bwd_ms']:.3f}", f"{t['fwd_bwd_device_ms']:.3f}",
                     f"{t['fwd_tflops']:.0f} / {t['fwd_bwd_tflops']:.0f}"])
        print(" | ".join(rows[-1]), flush=True)
    return rows


HEADER = ["case", "kernel", "max rel err", "fwd ms", "fwd device ms", "fwd+bwd ms", "fwd+bwd device ms",
          "TFLOP/s fwd / fwd+bwd"]


def main(argv=None) -> int:
    a = parse_args(argv)
    if cuda_missing(a):
        return 2
    if a.device != "cuda":
        a.b, a.t = min(a.b, 2), min(a.t, 64)
    result = new_result(a, ("torch", "flash-attn-4", "flash_attn_3", "flash-attn", "nvidia-cutlass-dsl"), ("parity",))
    rows: list[list] = []

    def measure():
        for case in a.case_list:
            rows.extend(measure_case(a, case, result))

    rc = run_and_write(a, result, measure)
    print(table(rows, HEADER))
    return rc


if __name__ == "__main__":
    sys.exit(main())
