"""The submission artifact: a pickle-free tensor container, compressed, plus the code that evaluates it.

Container (before compression), all little-endian:
    8 bytes  magic b"GOLFART1"
    8 bytes  header length H (uint64)
    H bytes  UTF-8 JSON: {"format": 1, "model_config": {...}, "spec": {...},
                          "tensors": [{"name", "dtype", "shape", "offset", "nbytes"}, ...]}
    payload  raw tensor bytes, back to back in the order of "tensors" (offsets 0, n0, n0+n1, ...)
Format 2 is the same with each tensor of k-byte elements stored as k byte planes (every element's byte 0,
then every byte 1, ...; package.byte_planes): the exponent-and-sign bytes of fp16 scales then sit
together, which the compressors' context models code more tightly.
Loading parses JSON and copies raw bytes into tensors of four whitelisted dtypes after checking every
entry against the real data size: nothing is ever executed, so an untrusted artifact is safe to load.
A malformed, truncated or oversized artifact raises ArtifactError naming the file and the problem.

Stored tensors (written by golf.gptq): `<name>.q` int8 codes + `<name>.scale` fp16 per-row scales for
quantized matrices, `<name>` for tensors kept in float. The spec says, per model tensor, which form it has
and its bit width. The artifact folder holds the compressed container (model.golf.xz; .zst / .br with
the other compressors), code/*.py (the golf modules that load and score it, counted in the size; put
them in a folder named golf/ to import them) and provenance.json.
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from golf import artifact_checks
from golf.config import CAP_BYTES, ModelConfig, section_from_dict
from golf.errors import ArtifactError
from golf.io import atomic_dir, write_json_atomic
from golf.param_groups import size_group

MAGIC = b"GOLFART1"
FORMAT_VERSION = 1
PLANES_FORMAT = 2  # format 1 with multi-byte tensors stored as byte planes
MODEL_FILES = {"lzma": "model.golf.xz", "zstd": "model.golf.zst", "brotli": "model.golf.br"}
MAX_RAW_BYTES = 1 << 30  # a 16 MB artifact that inflates past 1 GiB is hostile (decompression bomb)
MAX_HEADER_BYTES = 64 << 20
# The golf modules that load and score an artifact; their imports of other golf modules are followed.
EVAL_ROOTS = ("package", "model", "evaluate", "ttt")
_DTYPES = {"int8": torch.int8, "float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
_NP = {"int8": np.int8, "float16": np.float16, "bfloat16": np.int16, "float32": np.float32}  # bf16 via int16
_NAME_OF = {v: k for k, v in _DTYPES.items()}
_ORDER = {"int8": 0, "float16": 1, "bfloat16": 2, "float32": 3}


# --------------------------------------------------------------------------------------------------
# Container
# --------------------------------------------------------------------------------------------------


def _planes(raw: bytes, itemsize: int, inverse: bool = False) -> bytes:
    """Little-endian elements (n, k) as k byte planes (k, n), or back (inverse)."""
    if itemsize == 1:
        return bytes(raw)
    a = np.frombuffer(raw, dtype=np.uint8)
    return (a.reshape(itemsize, -1).T if inverse else a.reshape(-1, itemsize).T).tobytes()


def serialize(tensors: dict[str, torch.Tensor], spec: dict, model_config: dict, byte_planes: bool = False) -> bytes:
    """Deterministic bytes: tensors grouped by dtype, then by name; JSON with sorted keys. byte_planes: format 2
    (each multi-byte tensor as byte planes); otherwise format 1."""
    entries, chunks, offset = [], [], 0
    for name in sorted(tensors, key=lambda n: (_ORDER.get(_NAME_OF.get(tensors[n].dtype, ""), 9), n)):
        t = tensors[name].detach().cpu().contiguous()
        if t.dtype not in _NAME_OF:
            raise ArtifactError(f"tensor {name!r} has dtype {t.dtype}, not one of {sorted(_DTYPES)}")
        arr = t.view(torch.int16).numpy() if t.dtype == torch.bfloat16 else t.numpy()
        raw = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        if byte_planes:
            raw = _planes(raw, t.element_size())
        entries.append({"name": name, "dtype": _NAME_OF[t.dtype], "shape": list(t.shape), "offset": offset,
                        "nbytes": len(raw)})
        chunks.append(raw)
        offset += len(raw)
    header = json.dumps({"format": PLANES_FORMAT if byte_planes else FORMAT_VERSION, "model_config": model_config, "spec": spec,
                         "tensors": entries}, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return MAGIC + struct.pack("<Q", len(header)) + header + b"".join(chunks)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def deserialize(blob: bytes, source: str = "<bytes>") -> tuple[dict[str, torch.Tensor], dict, dict]:
    """Inverse of serialize: (tensors, spec, model_config). Every header field is checked against the data."""
    if len(blob) < 16 or blob[:8] != MAGIC:
        raise ArtifactError(f"{source}: not a golf artifact (bad magic, expected {MAGIC!r})")
    (hlen,) = struct.unpack("<Q", blob[8:16])
    if hlen > min(len(blob) - 16, MAX_HEADER_BYTES):
        raise ArtifactError(f"{source}: header length {hlen} runs past the end of the data ({len(blob)} bytes)")
    try:
        header = json.loads(blob[16:16 + hlen].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:  # ValueError: JSON errors, 4,300+-digit ints
        raise ArtifactError(f"{source}: header is not valid JSON ({e})") from None
    if not isinstance(header, dict) or set(header) != {"format", "model_config", "spec", "tensors"}:
        raise ArtifactError(f"{source}: header must be an object with keys format, model_config, spec, tensors")
    if header["format"] not in (FORMAT_VERSION, PLANES_FORMAT):
        raise ArtifactError(f"{source}: unsupported artifact format {header['format']!r}, expected "
                            f"{FORMAT_VERSION} or {PLANES_FORMAT}")
    planes = header["format"] == PLANES_FORMAT
    if not isinstance(header["tensors"], list) or not isinstance(header["spec"], dict) \
            or not isinstance(header["model_config"], dict):
        raise ArtifactError(f"{source}: header fields have the wrong types")
    payload = memoryview(blob)[16 + hlen:]
    tensors, offset = {}, 0
    for e in header["tensors"]:
        if not isinstance(e, dict) or set(e) != {"name", "dtype", "shape", "offset", "nbytes"}:
            raise ArtifactError(f"{source}: malformed tensor entry {str(e)[:200]}")
        name, dtype, shape = e["name"], e["dtype"], e["shape"]
        if not isinstance(name, str) or name in tensors:
            raise ArtifactError(f"{source}: tensor name {name!r} is not a string or appears twice")
        if dtype not in _DTYPES:
            raise ArtifactError(f"{source}: tensor {name!r} has unknown dtype {dtype!r} (allowed: {sorted(_DTYPES)})")
        if not isinstance(shape, list) or len(shape) > 8 or not all(_is_int(s) and 0 <= s < 2 ** 40 for s in shape):
            raise ArtifactError(f"{source}: tensor {name!r} has a bad shape {shape!r}")
        numel = 1
        for s in shape:
            numel *= s
        nbytes = numel * _DTYPES[dtype].itemsize
        if not _is_int(e["nbytes"]) or e["nbytes"] != nbytes:
            raise ArtifactError(f"{source}: tensor {name!r} shape {shape} ({dtype}) needs {nbytes} bytes, "
                                f"header says {e['nbytes']!r}")
        if e["offset"] != offset:
            raise ArtifactError(f"{source}: tensor {name!r} offset {e['offset']!r}, expected {offset} "
                                "(entries must be back to back)")
        if offset + nbytes > len(payload):
            raise ArtifactError(f"{source}: tensor {name!r} lies outside the data ({offset + nbytes} > "
                                f"{len(payload)} payload bytes; truncated artifact?)")
        chunk = payload[offset:offset + nbytes]
        if planes:
            chunk = _planes(chunk, _DTYPES[dtype].itemsize, inverse=True)
        arr = np.frombuffer(chunk, dtype=np.dtype(_NP[dtype]).newbyteorder("<"))
        t = torch.from_numpy(arr.astype(_NP[dtype]))  # a native-order copy: no view into the blob
        tensors[name] = (t.view(torch.bfloat16) if dtype == "bfloat16" else t).reshape(shape)
        offset += nbytes
    if offset != len(payload):
        raise ArtifactError(f"{source}: {len(payload) - offset} bytes after the last tensor (header and data "
                            "disagree)")
    return tensors, header["spec"], header["model_config"]


# --------------------------------------------------------------------------------------------------
# Compression
# --------------------------------------------------------------------------------------------------


def compress(data: bytes, method: str) -> bytes | None:
    """LZMA (xz) preset 9 extreme; zstd level 22; brotli quality 11. None if that library is missing."""
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


def decompress(blob: bytes, method: str, source: str, max_bytes: int = MAX_RAW_BYTES) -> bytes:
    """Inverse of compress, refusing truncated streams, trailing bytes and output over max_bytes."""
    too_big = f"{source}: decompresses to more than {max_bytes:,} bytes (refused)"
    truncated = f"{source}: the {method} stream is incomplete (truncated or corrupt artifact)"
    if method == "lzma":
        d = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
        try:
            out = d.decompress(blob, max_length=max_bytes + 1)
        except lzma.LZMAError as e:
            raise ArtifactError(f"{source}: not a valid xz/LZMA stream (truncated or corrupt): {e}") from None
        if len(out) > max_bytes:
            raise ArtifactError(too_big)
        if not d.eof:
            raise ArtifactError(truncated)
        if d.unused_data:
            raise ArtifactError(f"{source}: {len(d.unused_data)} unexpected bytes after the LZMA stream")
        return out
    if method == "zstd":
        import zstandard

        size = zstandard.frame_content_size(blob) if len(blob) >= 18 else -1
        if size < 0:
            raise ArtifactError(f"{source}: not a zstd frame with a recorded size (truncated or corrupt)")
        if size > max_bytes:
            raise ArtifactError(too_big)
        d = zstandard.ZstdDecompressor().decompressobj()
        try:
            out = d.decompress(blob)
        except zstandard.ZstdError as e:
            raise ArtifactError(f"{source}: not a valid zstd stream: {e}") from None
        if not d.eof or len(out) != size or d.unused_data:
            raise ArtifactError(truncated)
        return out
    if method == "brotli":
        import brotli

        d, parts, total = brotli.Decompressor(), [], 0
        try:
            chunk = d.process(blob, output_buffer_limit=1 << 24)
            while True:
                parts.append(chunk)
                total += len(chunk)
                if total > max_bytes:
                    raise ArtifactError(too_big)
                if d.is_finished() or d.can_accept_more_data():
                    break
                chunk = d.process(b"", output_buffer_limit=1 << 24)
        except brotli.error as e:
            raise ArtifactError(f"{source}: not a valid brotli stream: {e}") from None
        if not d.is_finished():
            raise ArtifactError(truncated)
        return b"".join(parts)
    raise ArtifactError(f"{source}: unknown compressor {method!r}")


# --------------------------------------------------------------------------------------------------
# Quantized tensors ↔ float state dict
# --------------------------------------------------------------------------------------------------


def check_stored(tensors: dict[str, torch.Tensor], spec: dict, source: str = "<tensors>") -> None:
    """The stored tensors are exactly what the spec describes: shapes, dtypes, codes on the int grid."""
    expected = set()
    for name, s in spec.items():
        if not isinstance(s, dict) or s.get("kind") not in ("int", "float") or not isinstance(s.get("shape"), list):
            raise ArtifactError(f"{source}: spec of {name!r} is malformed: {str(s)[:200]}")
        shape = list(s["shape"])
        if s["kind"] == "int":
            q, sc = tensors.get(name + ".q"), tensors.get(name + ".scale")
            expected |= {name + ".q", name + ".scale"}
            if q is None or sc is None:
                raise ArtifactError(f"{source}: {name!r} is quantized but {name}.q or {name}.scale is missing")
            bits = s.get("bits")
            if not _is_int(bits) or not 2 <= bits <= 8:
                raise ArtifactError(f"{source}: {name!r} has bit width {bits!r}, expected 2..8")
            if q.dtype != torch.int8 or list(q.shape) != shape or len(shape) != 2:
                raise ArtifactError(f"{source}: {name}.q is {q.dtype} {list(q.shape)}, expected int8 {shape}")
            if not sc.is_floating_point() or list(sc.shape) != shape[:1]:
                raise ArtifactError(f"{source}: {name}.scale is {sc.dtype} {list(sc.shape)}, expected {shape[:1]}")
            qmax = 2 ** (bits - 1) - 1
            if q.numel() and int(q.abs().max()) > qmax:
                raise ArtifactError(f"{source}: {name}.q has codes outside the int{bits} range ±{qmax}")
            if not torch.isfinite(sc.float()).all():
                raise ArtifactError(f"{source}: {name}.scale has non-finite values")
        else:
            t = tensors.get(name)
            expected.add(name)
            if t is None or not t.is_floating_point() or list(t.shape) != shape:
                raise ArtifactError(f"{source}: float tensor {name!r} is missing or not {shape}")
    extra = sorted(set(tensors) - expected)
    if extra:
        raise ArtifactError(f"{source}: tensors not described by the spec: {extra[:5]}")


def dequantize(tensors: dict[str, torch.Tensor], spec: dict, source: str = "<tensors>") -> dict[str, torch.Tensor]:
    """Float32 state dict from stored tensors + spec (checked first): codes * per-row scale."""
    check_stored(tensors, spec, source)
    out = {}
    for name, s in spec.items():
        if s["kind"] == "int":
            out[name] = tensors[name + ".q"].float() * tensors[name + ".scale"].float()[:, None]  # (out, in)
        else:
            out[name] = tensors[name].float()
    return out


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
        if mod in seen:
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


COMPRESSORS = tuple(MODEL_FILES)  # package.compressor also takes "auto": the smallest of every candidate


def _label(method: str, byte_planes: bool) -> str:
    return f"{method}+planes" if byte_planes else method


def compress_candidates(tensors: dict[str, torch.Tensor], spec: dict, model_config: dict, compressor: str = "lzma",
                        byte_planes: bool = False, compare: bool = True, on_done: Callable[[], None] | None = None,
                        done: dict[str, bytes] | None = None
                        ) -> tuple[str, dict[str, bytes | None], dict[str, float], dict[bool, bytes]]:
    """Compress the container every way asked: (chosen label, blob per label, seconds per label, raw
    container per layout). A label is a compressor name, "+planes" for the byte-plane layout. "auto" tries
    every compressor in both layouts and chooses the smallest; otherwise `compressor` in the given layout is
    chosen and `compare` adds the other compressors' sizes (same layout) for the record. on_done() after each
    compression (from a worker thread). done: blobs by label already compressed (not compressed again, no
    seconds recorded)."""
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
        out = compress(raws[job[1]], job[0])
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
                   progress: Callable[[int, int], None] | None = None, precompressed: bytes | None = None) -> dict:
    """Write out_dir/ (compressed model + code + provenance) atomically; return size metrics.
    progress(steps done, steps) after each compression, the read-back check and the write.

    precompressed: these tensors' container already compressed by `compressor` (not auto) in the
    `byte_planes` layout (e.g. by the size-target search): it is written instead of compressing again, after
    the same read-back check; `compare` then compresses only the other compressors.

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
                                                      on_done=tick, done=done)
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


def _model_path(path: Path) -> tuple[Path, str]:
    """The model file of an artifact folder (or the file itself) and its compressor."""
    if path.is_dir():
        found = [(path / f, m) for m, f in MODEL_FILES.items() if (path / f).is_file()]
        if len(found) != 1:
            raise ArtifactError(f"artifact {str(path)!r}: expected exactly one of {sorted(MODEL_FILES.values())}, "
                                f"found {len(found)} (run the package stage first)")
        return found[0]
    for m, f in MODEL_FILES.items():
        if path.name.endswith(Path(f).suffix) and path.is_file():
            return path, m
    raise ArtifactError(f"artifact {str(path)!r} not found or not a model file "
                        f"({', '.join(sorted(MODEL_FILES.values()))}); run the package stage first")


@dataclass
class Artifact:
    config: ModelConfig
    tensors: dict[str, torch.Tensor]  # stored form: <name>.q int8, <name>.scale fp16, float tensors
    spec: dict
    model_path: Path
    compressor: str
    model_bytes: int
    raw_bytes: int


def open_artifact(path: str | Path) -> Artifact:
    """Read, decompress and check an artifact folder (or its model file). ArtifactError on any defect."""
    mpath, method = _model_path(Path(path))
    blob = mpath.read_bytes()
    raw = decompress(blob, method, str(mpath), artifact_checks.MAX_RAW_BYTES)
    tensors, spec, mcfg = deserialize(raw, str(mpath))
    artifact_checks.check_model_config(mcfg, str(mpath))
    try:
        cfg = section_from_dict(ModelConfig, mcfg, f"{mpath} model_config")
    except Exception as e:  # noqa: BLE001 (ConfigError, or a type error from a crafted config)
        raise ArtifactError(f"artifact {str(mpath)!r}: bad model config: {e}") from None
    artifact_checks.check_spec(spec, str(mpath))
    check_stored(tensors, spec, str(mpath))
    artifact_checks.check_finite(tensors, str(mpath))
    return Artifact(cfg, tensors, spec, mpath, method, len(blob), len(raw))


def load_model_from_artifact(path: str | Path, device: torch.device | str = "cpu"):
    """The dequantized GolfLM exactly as the artifact stores it (eval mode). Eval stages load only this."""
    from golf.model import build_model

    art = open_artifact(path)
    artifact_checks.check_against_model(art.config, art.spec, str(art.model_path))  # before allocating a model
    model = build_model(art.config, device)
    state = dequantize(art.tensors, art.spec, str(art.model_path))
    try:
        model.load_state_dict({k: v.to(device) for k, v in state.items()}, strict=True)
    except RuntimeError as e:
        raise ArtifactError(f"artifact {str(path)!r} does not match its model config: {e}") from None
    return model.eval()


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
