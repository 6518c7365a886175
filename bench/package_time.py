"""Timing of the package stage with package.target_bytes on a random quantized model of a config (CPU or
GPU host; the compressions run on the CPU either way). Not part of CI.

The model is built from the config's model section with random weights (zero-initialized projections
perturbed, as bench/quant_bench.py does) and quantized round-to-nearest at the config's bit widths (GPTQ
codes with --calib-seqs N, random-token Hessians); the column weights diag(H) are log-normal stand-ins (the Hessians' with --calib-seqs).
First a plain package (no target) gives the untouched size, then the package with a target of
--target-frac of it (or --target-bytes) runs as the package stage does; the seconds of each phase are
printed: the compressor sweep, the search, the write.

    python bench/package_time.py                                            # configs/hybrid_seed_fit.yaml
    python bench/package_time.py --target-bytes 15900000 --skip-plain
    python bench/package_time.py --set package.segments=1                   # params overrides
    python bench/package_time.py --artifact runs/1337/artifact --set package.compressor=auto --skip-target
--artifact takes a packaged artifact's stored tensors (a trained model's codes compress like a trained model's)
instead of the random model; --skip-target times the plain package alone.
Writes $OUT/package_time.json when OUT is set, and prints the same JSON.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quant_bench import emit, random_model, random_token_batches  # bench/ is sys.path[0] for a script here

from golf.artifact import open_artifact
from golf.config import load_params, to_dict
from golf.errors import ArtifactError
from golf.gptq import embedding_names, quantize_model
from golf.hessian import collect_hessians
from golf.model import build_model, count_params
from golf.package import build_artifact
from golf.size_target import column_weights, shrink_for_package


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", default="configs/hybrid_seed_fit.yaml")
    ap.add_argument("--target-frac", type=float, default=0.9, help="target = this fraction of the untouched size")
    ap.add_argument("--target-bytes", type=int, default=0, help="an explicit target (overrides --target-frac)")
    ap.add_argument("--skip-plain", action="store_true", help="no plain package first (needs --target-bytes)")
    ap.add_argument("--calib-seqs", type=int, default=0, help="GPTQ on random-token Hessians (default: RTN)")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="params override, e.g. package.segments=1")
    ap.add_argument("--artifact", default="", help="an artifact folder whose stored tensors are packaged instead")
    ap.add_argument("--skip-target", action="store_true", help="only the plain package (no size target)")
    args = ap.parse_args()
    if args.skip_plain and not args.target_bytes:
        ap.error("--skip-plain needs --target-bytes")

    p = load_params(args.params, args.sets)
    pc = p.package
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    art = open_artifact(args.artifact) if args.artifact else None
    model = build_model(art.config, "cpu") if art else random_model(p.model, device)
    res = {"config": args.params, "sets": args.sets, "artifact": args.artifact, "params": count_params(model),
           "compressor": pc.compressor, "byte_planes": pc.byte_planes, "compare_compressors": pc.compare_compressors,
           "segments": pc.segments, "cpu_count": os.cpu_count(),
           "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
    t0 = time.time()
    hess = {}
    if art:
        tensors, spec = art.tensors, art.spec
    elif args.calib_seqs:
        batches = random_token_batches(p.model.vocab_size, args.calib_seqs, p.calib.batch_seqs, p.calib.seq_len)
        hess, _ = collect_hessians(model, batches, device, torch.bfloat16 if device.type == "cuda" else None)
    if not art:
        tensors, spec, _ = quantize_model(model, hess, p.quant, device)
        res["quantize_s"] = round(time.time() - t0, 2)
    g = torch.Generator().manual_seed(1)
    embeds = embedding_names(model)
    col_weights = column_weights(hess) if hess else {  # (in,) log-normal stand-ins for diag(H)
        n: torch.randn(s["shape"][1], generator=g).exp() for n, s in spec.items()
        if s["kind"] == "int" and n not in embeds}
    res["int_codes"] = sum(tensors[n + ".q"].numel() for n in col_weights if n + ".q" in tensors)  # small layers stay float
    mcfg = to_dict(model.cfg)

    with tempfile.TemporaryDirectory() as tmp:
        target = args.target_bytes
        if not args.skip_plain:
            t0 = time.time()
            m = build_artifact(Path(tmp) / "plain", tensors, spec, mcfg, pc.compressor, cap_bytes=10 ** 12,
                               compare=pc.compare_compressors, byte_planes=pc.byte_planes, segments=pc.segments)
            res["plain_package_s"] = round(time.time() - t0, 2)
            res["plain_total_bytes"] = m["total_bytes"]
            res["plain_chosen"] = m["compressor"] + ("+planes" if m.get("byte_planes") else "")
            res["plain_compress_secs"] = m["compress_secs"]
            target = target or int(args.target_frac * m["total_bytes"])
        if args.skip_target:
            emit(res, "package_time.json")
            return
        res["target_bytes"] = target
        t0 = time.time()
        try:
            out, info, method, planes, blob = shrink_for_package(tensors, spec, mcfg, col_weights, target,
                                                                 pc.compressor, pc.byte_planes,
                                                                 compare=pc.compare_compressors,
                                                                 segments=pc.segments)
        except ArtifactError as e:  # the target is out of reach of this model: say so with the seconds spent
            res.update(error=str(e), target_package_s=round(time.time() - t0, 2))
            emit(res, "package_time.json")
            raise SystemExit(2) from None
        t1 = time.time()
        m = build_artifact(Path(tmp) / "target", out, spec, mcfg, method, cap_bytes=10 ** 12, compare=False,
                           byte_planes=planes, precompressed=blob, segments=pc.segments)
        t2 = time.time()
    res["phase_secs"] = {**info["secs"], "write": round(t2 - t1, 2)}
    res["target_package_s"] = round(t2 - t0, 2)
    res["size_target"] = {k: info[k] for k in ("size_before", "size_after", "zeroed", "candidates", "slack_bytes",
                                               "rounds", "measures", "within_slack", "measured")}
    res["total_bytes"] = m["total_bytes"]
    res["chosen"] = f"{method}{'+planes' if planes else ''}"
    res["fits"] = m["total_bytes"] <= target
    emit(res, "package_time.json")


if __name__ == "__main__":
    main()
