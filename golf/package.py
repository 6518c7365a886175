"""Building the submission artifact: serialize the stored tensors into the container (format, checks and
loading in golf.artifact), compress it every way asked, account its size per tensor group and write the
artifact folder with the evaluation code it ships (code_files). Only the package stage needs this module;
the artifact's code/ holds golf.artifact instead.
"""

from __future__ import annotations

import ast
import json
import lzma
import os
import shutil
import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from golf.artifact import (
    DTYPE_NAMES,
    DTYPE_ORDER,
    DTYPES,
    FORMAT_VERSION,
    MAGIC,
    MODEL_FILES,
    PLANES_FORMAT,
    SEGMENTS_MAGIC,
    check_stored,
    decompress,
    deserialize,
    open_artifact,
    transpose_planes,
)
from golf.config import CAP_BYTES
from golf.errors import ArtifactError
from golf.io import atomic_dir, write_json_atomic
from golf.param_groups import size_group

# The golf modules that load and score an artifact; their imports of other golf modules are followed.
EVAL_ROOTS = ("artifact", "model", "evaluate", "ttt")
# Modules only training reaches, though a shipped module names them: golf.ssm imports ssm_ops only for
# model.ssm_compile "opaque" (the SSM kernels as custom ops for a fully compiled training step), and an
# artifact's model is built with "disable" (golf.artifact.load_model_from_artifact), so its ~22 KB stay out
# of every artifact's byte count. Likewise golf.attention imports attn_ops only for model.attn_backend "flash4"
# (FlashAttention-4 as a custom op), and an artifact's model is built with "auto" instead; golf.model imports
# block_norm_kernel only for model.block_norm "golf" and qk_rope_kernel only for model.qk_rope "golf", and an
# artifact's model is built with "torch" for both; lm_loss only for model.lm_loss "fused" (training's loss) and
# embed_grad only for model.embed_grad "sorted" (training's embedding gradient).
TRAINING_ONLY = ("ssm_ops", "mixer_op", "attn_ops", "block_norm_kernel", "qk_rope_kernel", "lm_loss", "embed_grad")


# --------------------------------------------------------------------------------------------------
# Container and compression
# --------------------------------------------------------------------------------------------------


def serialize(tensors: dict[str, torch.Tensor], spec: dict, model_config: dict, byte_planes: bool = False) -> bytes:
    """Deterministic bytes: tensors grouped by dtype, then by name; JSON with sorted keys. byte_planes: format 2
    (each multi-byte tensor as byte planes); otherwise format 1."""
    entries, chunks, offset = [], [], 0
    for name in sorted(tensors, key=lambda n: (DTYPE_ORDER.get(DTYPE_NAMES.get(tensors[n].dtype, ""), 9), n)):
        t = tensors[name].detach().cpu().contiguous()
        if t.dtype not in DTYPE_NAMES:
            raise ArtifactError(f"tensor {name!r} has dtype {t.dtype}, not one of {sorted(DTYPES)}")
        arr = t.view(torch.int16).numpy() if t.dtype == torch.bfloat16 else t.numpy()
        raw = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        if byte_planes:
            raw = transpose_planes(raw, t.element_size())
        entries.append({"name": name, "dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape), "offset": offset,
                        "nbytes": len(raw)})
        chunks.append(raw)
        offset += len(raw)
    header = json.dumps({"format": PLANES_FORMAT if byte_planes else FORMAT_VERSION, "model_config": model_config, "spec": spec,
                         "tensors": entries}, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return MAGIC + struct.pack("<Q", len(header)) + header + b"".join(chunks)


# A segment is at least this long: a small container stays one stream (its bytes as before segments existed),
# and cutting costs almost nothing in size (2026-11-30, a 19.5 MB int6 byte-plane container: brotli-11 as one
# stream 13,120,564 bytes, as 16 segments 13,120,802, +0.002%).
MIN_SEGMENT_BYTES = 1 << 20
# Compressions running at once, over all threads (the auto sweep, the size search and each one's segments):
# one per core, so that memory stays bounded (an LZMA preset-9 encoder takes ~0.7 GB).
_COMPRESS_SLOTS = threading.BoundedSemaphore(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                             else (os.cpu_count() or 1))


def segment_bounds(n_bytes: int, segments: int) -> list[int]:
    """Byte offsets cutting a container of n_bytes into min(segments, n_bytes // MIN_SEGMENT_BYTES) (at least 1)
    near-equal ranges: [0, ..., n_bytes]. A function of the two numbers only, never of the machine."""
    n = max(1, min(segments, n_bytes // MIN_SEGMENT_BYTES))
    return [n_bytes * i // n for i in range(n + 1)]


def compress(data: bytes, method: str, segments: int = 1) -> bytes | None:
    """The container compressed by `method`: one stream, or with segments > 1 (package.segments) its
    segment_bounds ranges compressed in parallel threads and framed as golf.artifact's module docstring says.
    The bytes depend only on the data, the method and segments. None if that library is missing."""
    bounds = segment_bounds(len(data), segments)
    if len(bounds) == 2:
        return _compress_stream(data, method)
    with ThreadPoolExecutor(max_workers=len(bounds) - 1) as pool:
        parts = list(pool.map(lambda i: _compress_stream(data[bounds[i]:bounds[i + 1]], method),
                              range(len(bounds) - 1)))
    if any(p is None for p in parts):
        return None
    return SEGMENTS_MAGIC + struct.pack(f"<I{len(parts)}Q", len(parts), *map(len, parts)) + b"".join(parts)


def _compress_stream(data: bytes, method: str) -> bytes | None:
    """LZMA (xz) preset 9 extreme; zstd level 22; brotli quality 11. None if that library is missing."""
    with _COMPRESS_SLOTS:
        return _compress_now(data, method)


def _compress_now(data: bytes, method: str) -> bytes | None:
    if method == "lzma":
        return lzma.compress(data, format=lzma.FORMAT_XZ, preset=9 | lzma.PRESET_EXTREME)
    if method == "zstd":
        try:
            import zstandard
        except ImportError:
            return None
        return zstandard.ZstdCompressor(level=22, write_content_size=True).compress(data)
    if method == "brotli":
        try:
            import brotli
        except ImportError:
            return None
        return brotli.compress(data, quality=11)
    raise ArtifactError(f"unknown compressor {method!r}; expected one of {sorted(MODEL_FILES)}")


# --------------------------------------------------------------------------------------------------
# Size accounting
# --------------------------------------------------------------------------------------------------


def _bits(t: torch.Tensor) -> torch.Tensor:
    """A tensor's raw bytes as a flat uint8 tensor, for bit-for-bit comparison and byte statistics."""
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8)


def group_sizes(tensors: dict[str, torch.Tensor], model_bytes: int) -> tuple[dict[str, int], dict[str, int]]:
    """(raw stored bytes per group, compressed model bytes attributed to each group).

    The compressed file is one stream, so a group's share is an estimate: model_bytes split in proportion
    to each group's order-0 byte entropy (a close proxy for how LZMA codes quantized weights); the shares
    sum to model_bytes exactly."""
    raw: dict[str, int] = {}
    counts: dict[str, np.ndarray] = {}
    for name, t in tensors.items():
        g = size_group(name)
        b = _bits(t).numpy()
        raw[g] = raw.get(g, 0) + b.size
        counts[g] = counts.get(g, 0) + np.bincount(b, minlength=256)
    ent = {}
    for g, c in counts.items():
        p = c[c > 0] / max(c.sum(), 1)
        ent[g] = float(-(p * np.log2(p)).sum() * c.sum() / 8)  # bytes at order-0 entropy
    total_ent = sum(ent.values()) or 1.0
    shares = {g: int(model_bytes * e / total_ent) for g, e in ent.items()}
    if shares:  # the rounding remainder goes to the largest group, so the shares sum to model_bytes
        shares[max(shares, key=shares.get)] += model_bytes - sum(shares.values())
    return dict(sorted(raw.items())), dict(sorted(shares.items()))


# --------------------------------------------------------------------------------------------------
# The artifact folder
# --------------------------------------------------------------------------------------------------


def code_files(roots: tuple[str, ...] = EVAL_ROOTS) -> list[Path]:
    """golf/__init__.py, the root modules and every golf module they import (followed through their source)."""
    here = Path(__file__).resolve().parent
    todo, seen = ["__init__", *roots], set()
    while todo:
        mod = todo.pop()
        if mod in seen or mod in TRAINING_ONLY:
            continue
        path = here / f"{mod}.py"
        if not path.is_file():
            raise ArtifactError(f"the evaluation code needs golf/{mod}.py, which is missing")
        seen.add(mod)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module == "golf":
                    todo += [a.name for a in node.names]
                elif node.module.startswith("golf."):
                    todo.append(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                todo += [a.name.split(".")[1] for a in node.names if a.name.startswith("golf.")]
    return sorted(here / f"{m}.py" for m in seen)


def _label(method: str, byte_planes: bool) -> str:
    return f"{method}+planes" if byte_planes else method


def compress_candidates(tensors: dict[str, torch.Tensor], spec: dict, model_config: dict, compressor: str = "lzma",
                        byte_planes: bool = False, compare: bool = True, on_done: Callable[[], None] | None = None,
                        done: dict[str, bytes] | None = None, segments: int = 1
                        ) -> tuple[str, dict[str, bytes | None], dict[str, float], dict[bool, bytes]]:
    """Compress the container every way asked: (chosen label, blob per label, seconds per label, raw
    container per layout). A label is a compressor name, "+planes" for the byte-plane layout. "auto" tries
    every compressor in both layouts and chooses the smallest; otherwise `compressor` in the given layout is
    chosen and `compare` adds the other compressors' sizes (same layout) for the record. on_done() after each
    compression (from a worker thread). done: blobs by label already compressed (not compressed again, no
    seconds recorded). segments: package.segments (compress)."""
    if compressor != "auto" and compressor not in MODEL_FILES:
        raise ArtifactError(f"package.compressor {compressor!r}: expected one of {sorted(MODEL_FILES)} or auto")
    layouts = (False, True) if compressor == "auto" else (byte_planes,)
    raws = {bp: serialize(tensors, spec, model_config, bp) for bp in layouts}
    if compressor == "auto":
        jobs = [(m, bp) for bp in layouts for m in MODEL_FILES]
    else:
        jobs = [(compressor, byte_planes)] + [(m, byte_planes) for m in MODEL_FILES if compare and m != compressor]
    done = done or {}
    jobs = [j for j in jobs if _label(*j) not in done]
    secs: dict[str, float] = {}

    def timed(job: tuple[str, bool]) -> bytes | None:
        t0 = time.time()
        out = compress(raws[job[1]], job[0], segments)
        secs[_label(*job)] = round(time.time() - t0, 2)
        if on_done is not None:
            on_done()
        return out

    # The compressors release the GIL: the comparison sizes cost no wall time beyond the slowest one.
    with ThreadPoolExecutor(max_workers=max(len(jobs), 1)) as pool:
        results = {**done, **dict(zip([_label(*j) for j in jobs], pool.map(timed, jobs)))}
    if compressor == "auto":
        sized = {k: len(v) for k, v in results.items() if v is not None}
        chosen = min(sized, key=lambda k: (sized[k], k))
    else:
        chosen = _label(compressor, byte_planes)
        if results[chosen] is None:
            raise ArtifactError(f"package.compressor {compressor!r}: its Python library is not installed")
    return chosen, results, secs, raws


def remove_artifact(out_dir: str | Path) -> bool:
    """Take a previous artifact out of the way (renamed aside, then deleted), so that a failed package can
    never leave an older model for a later eval to score. Only a folder holding a model file is removed."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir() or not any((out_dir / f).is_file() for f in MODEL_FILES.values()):
        return False
    aside = out_dir.with_name(f".{out_dir.name}.stale-{os.getpid()}")
    if aside.exists():
        shutil.rmtree(aside)
    os.replace(out_dir, aside)  # atomic: the old artifact is gone from its path at once
    shutil.rmtree(aside, ignore_errors=True)
    return True


def build_artifact(out_dir: str | Path, tensors: dict[str, torch.Tensor], spec: dict, model_config: dict,
                   compressor: str = "lzma", cap_bytes: int = CAP_BYTES, compare: bool = True,
                   provenance: dict | None = None, byte_planes: bool = False, extra_metrics: dict | None = None,
                   progress: Callable[[int, int], None] | None = None, precompressed: bytes | None = None,
                   segments: int = 1) -> dict:
    """Write out_dir/ (compressed model + code + provenance) atomically; return size metrics.
    progress(steps done, steps) after each compression, the read-back check and the write.

    precompressed: these tensors' container already compressed by `compressor` (not auto) in the
    `byte_planes` layout (e.g. by the size-target search): it is written instead of compressing again, after
    the same read-back check; `compare` then compresses only the other compressors. segments: package.segments
    (compress); a precompressed model must have been compressed with the same.

    total_bytes = compressed model bytes + code bytes. Over cap_bytes: ArtifactError naming the sizes;
    nothing is written and a previous artifact in out_dir is removed (a later eval must not score a stale
    model). The compressed bytes are read back and compared bit for bit before writing."""
    out_dir = Path(out_dir)
    check_stored(tensors, spec, "quantized model")
    if precompressed is not None and compressor not in MODEL_FILES:
        raise ArtifactError(f"build_artifact: a precompressed model needs its compressor, one of "
                            f"{sorted(MODEL_FILES)}, not {compressor!r}")
    n_jobs = 2 * len(MODEL_FILES) if compressor == "auto" else (len(MODEL_FILES) if compare else 1)
    n_jobs -= precompressed is not None
    steps = [0, n_jobs + 2]
    lock = threading.Lock()

    def tick() -> None:
        with lock:
            steps[0] += 1
            if progress is not None:
                progress(*steps)

    done = None if precompressed is None else {_label(compressor, byte_planes): precompressed}
    chosen, results, secs, raws = compress_candidates(tensors, spec, model_config, compressor, byte_planes, compare,
                                                      on_done=tick, done=done, segments=segments)
    method, planes = chosen.removesuffix("+planes"), chosen.endswith("+planes")
    blob = results[chosen]
    back, _, _ = deserialize(decompress(blob, method, "freshly compressed model"))
    if set(back) != set(tensors) or not all(back[k].dtype == tensors[k].dtype and back[k].shape == tensors[k].shape
                                            and torch.equal(_bits(back[k]), _bits(tensors[k])) for k in tensors):
        raise ArtifactError("the compressed model does not read back bit for bit (a bug: please report)")
    tick()
    files = code_files()
    code_bytes = sum(f.stat().st_size for f in files)
    model_bytes = len(blob)
    total = model_bytes + code_bytes
    groups_raw, groups = group_sizes(tensors, model_bytes)
    n_params = sum(int(np.prod(s["shape"])) for s in spec.values())
    metrics = {"model_bytes": model_bytes, "code_bytes": code_bytes, "total_bytes": total, "cap_bytes": cap_bytes,
               "under_cap": total <= cap_bytes, "headroom_bytes": cap_bytes - total, "raw_bytes": len(raws[planes]),
               "compressor": method, "model_file": MODEL_FILES[method],
               "compressed": {k: (len(v) if v is not None else "unavailable") for k, v in results.items()},
               "compress_secs": secs, "groups": groups, "groups_raw_bytes": groups_raw, "params": n_params,
               "bits_per_param": round(8 * model_bytes / max(n_params, 1), 4),
               "code_files": [f.name for f in files]}
    if compressor == "auto" or byte_planes:
        metrics["byte_planes"] = planes
    metrics.update(extra_metrics or {})
    if total > cap_bytes:
        removed = remove_artifact(out_dir)
        raise ArtifactError(f"artifact would be {total:,} bytes ({model_bytes:,} compressed model + {code_bytes:,} "
                            f"code), over the cap of {cap_bytes:,} bytes (package.cap_bytes); shrink the model, "
                            "quantize harder or set package.target_bytes"
                            + ("; the previous artifact was removed" if removed else ""))
    with atomic_dir(out_dir) as tmp:
        (tmp / MODEL_FILES[method]).write_bytes(blob)
        (tmp / "code").mkdir()
        for f in files:
            shutil.copyfile(f, tmp / "code" / f.name)
        if provenance is not None:
            write_json_atomic(tmp / "provenance.json", provenance)
    tick()
    return metrics

def inspect_artifact(path: str | Path) -> str:
    """A size breakdown by tensor group (each group also compressed alone, LZMA preset 6, as an estimate)."""
    art = open_artifact(path)
    code_dir = art.model_path.parent / "code"
    code_bytes = sum(f.stat().st_size for f in code_dir.rglob("*.py")) if code_dir.is_dir() else 0
    groups: dict[str, list] = {}  # group -> [params, [raw bytes of each stored tensor]]
    for name in sorted(art.tensors):
        t = art.tensors[name]
        g = groups.setdefault(size_group(name), [0, []])
        g[0] += 0 if name.endswith(".scale") else t.numel()
        g[1].append(_bits(t).numpy().tobytes())
    kinds: dict[str, int] = {}
    for s in art.spec.values():
        key = f"int{s['bits']}" if s["kind"] == "int" else s["dtype"]
        kinds[key] = kinds.get(key, 0) + int(np.prod(s["shape"]))
    lines = [f"artifact {art.model_path} ({art.compressor})",
             f"model: layer pattern {art.config.layer_pattern}, d_model {art.config.d_model}, "
             f"vocab {art.config.vocab_size}; params stored as "
             + ", ".join(f"{k}: {v:,}" for k, v in sorted(kinds.items())),
             f"{'group':<16}{'params':>12}{'raw bytes':>14}{'~lzma bytes':>14}"]
    for g, (n, chunks) in sorted(groups.items()):
        data = b"".join(chunks)
        lines.append(f"{g:<16}{n:>12,}{len(data):>14,}{len(lzma.compress(data, preset=6)):>14,}")
    lines += [f"raw container {art.raw_bytes:,} bytes -> compressed model {art.model_bytes:,} bytes",
              f"code {code_bytes:,} bytes; total {art.model_bytes + code_bytes:,} bytes",
              "(~lzma = each group compressed alone; the real file compresses them together)"]
    return "\n".join(lines)
