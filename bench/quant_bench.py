"""Timing of hessian → quantize → package for a full-size config (target: <= 60 s for the seed hybrid on an
H200). Not part of CI. The model is random (zero-initialized projections perturbed) unless --model-dir
points at a trained runs/<seed>/train; calibration uses random tokens unless --data-dir has train shards.

    python bench/quant_bench.py                                   # configs/hybrid_seed.yaml, device auto
    python bench/quant_bench.py --calib-seqs 16 --device cpu      # a CPU estimate
Writes $OUT/quant_bench.json when OUT is set, and prints the same JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from golf.config import load_params, to_dict
from golf.gptq import quantize_model
from golf.hessian import calibrate, collect_hessians
from golf.io import write_text_atomic
from golf.model import build_model, count_params, load_model
from golf.package import build_artifact
from golf.runtime import resolve_device


def random_model(model_cfg, device: torch.device):
    """The config's model with random weights: its zero-initialized projections perturbed (N(0, 0.02) added to
    every matrix), on the fast kernels on CUDA and the reference paths elsewhere. Shared with package_time.py."""
    cfg = dataclasses.replace(model_cfg, ssm_backend="auto" if device.type == "cuda" else "reference",
                              attn_backend="auto" if device.type == "cuda" else "sdpa")
    torch.manual_seed(0)
    model = build_model(cfg, device)
    with torch.no_grad():
        for _, prm in model.named_parameters():
            if prm.ndim == 2:
                prm.add_(torch.randn_like(prm) * 0.02)
    return model


def random_token_batches(vocab_size: int, n_seqs: int, batch_seqs: int, seq_len: int) -> list[torch.Tensor]:
    """Calibration batches of random tokens: ceil(n_seqs / batch_seqs) batches of (min(batch_seqs, n_seqs),
    seq_len), seeded."""
    g = torch.Generator().manual_seed(0)
    b = min(batch_seqs, n_seqs)
    return [torch.randint(0, vocab_size, (b, seq_len), generator=g) for _ in range(-(-n_seqs // batch_seqs))]


def emit(res: dict, name: str) -> None:
    """Print the result JSON, and write it as $OUT/<name> when OUT is set (a device call returns $OUT)."""
    text = json.dumps(res, indent=2)
    print(text)
    if os.environ.get("OUT"):
        write_text_atomic(Path(os.environ["OUT"], name), text + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", default="configs/hybrid_seed.yaml")
    ap.add_argument("--model-dir", default="", help="a trained runs/<seed>/train (default: a random model)")
    ap.add_argument("--data-dir", default="", help="a prepared data folder (default: random tokens)")
    ap.add_argument("--calib-seqs", type=int, default=0, help="override calib.num_sequences")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-compare", action="store_true", help="skip the zstd/brotli comparison sizes")
    args = ap.parse_args()

    p = load_params(args.params)
    calib = p.calib if not args.calib_seqs else dataclasses.replace(p.calib, num_sequences=args.calib_seqs)
    device = resolve_device(args.device)
    model = load_model(args.model_dir, device) if args.model_dir else random_model(p.model, device)
    autocast = torch.bfloat16 if device.type == "cuda" else None
    res = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "config": args.params, "params": count_params(model), "calib_sequences": calib.num_sequences,
           "calib_seq_len": calib.seq_len, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    t0 = time.time()
    if args.data_dir:
        hess, _ = calibrate(model, args.data_dir, calib, device, autocast)
    else:
        batches = random_token_batches(p.model.vocab_size, calib.num_sequences, calib.batch_seqs, calib.seq_len)
        hess, _ = collect_hessians(model, batches, device, autocast)
    sync()
    res["hessian_s"] = round(time.time() - t0, 2)
    res["linears"] = len(hess)

    t0 = time.time()
    tensors, spec, report = quantize_model(model, hess, p.quant, device)
    sync()
    res["quantize_s"] = round(time.time() - t0, 2)
    res["gptq_layers"] = len(report)
    res["mean_rel_err"] = sum(v["rel_err"] for v in report.values()) / max(len(report), 1)
    res["mean_rtn_rel_err"] = sum(v["rtn_rel_err"] for v in report.values()) / max(len(report), 1)
    res["slowest_layers"] = sorted(((v["secs"], k, v["shape"]) for k, v in report.items()), reverse=True)[:3]

    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        m = build_artifact(Path(tmp) / "artifact", tensors, spec, to_dict(model.cfg), p.package.compressor,
                           cap_bytes=10 ** 12, compare=not args.no_compare, segments=p.package.segments)
    res["package_s"] = round(time.time() - t0, 2)
    res.update({k: m[k] for k in ("model_bytes", "code_bytes", "total_bytes", "raw_bytes", "compressed",
                                  "compress_secs", "groups", "bits_per_param")})
    res["total_s"] = round(res["hessian_s"] + res["quantize_s"] + res["package_s"], 2)
    emit(res, "quant_bench.json")


if __name__ == "__main__":
    main()
