"""The submission artifact's read side: the pickle-free tensor container, decompression, checks, loading.
This module ships inside the artifact (golf.package builds artifacts and is not shipped).

Container (before compression), all little-endian:
    8 bytes  magic b"GOLFART1"
    8 bytes  header length H (uint64)
    H bytes  UTF-8 JSON: {"format": 1, "model_config": {...}, "spec": {...},
                          "tensors": [{"name", "dtype", "shape", "offset", "nbytes"}, ...]}
    payload  raw tensor bytes, back to back in the order of "tensors" (offsets 0, n0, n0+n1, ...)
Format 2 is the same with each tensor of k-byte elements stored as k byte planes (every element's byte 0,
then every byte 1, ...; transpose_planes): the exponent-and-sign bytes of fp16 scales then sit
together, which the compressors' context models code more tightly.
Loading parses JSON and copies raw bytes into tensors of four whitelisted dtypes after checking every
entry against the real data size: nothing is ever executed, so an untrusted artifact is safe to load.
A malformed, truncated or oversized artifact raises ArtifactError naming the file and the problem.

Stored tensors (written by golf.gptq): `<name>.q` int8 codes + `<name>.scale` fp16 per-row scales for
quantized matrices, `<name>` for tensors kept in float. The spec says, per model tensor, which form it has
and its bit width. The artifact folder holds the compressed container (model.golf.xz; .zst / .br with
the other compressors), code/*.py (the golf modules that load and score it, counted in the size; put
them in a folder named golf/ to import them) and provenance.json.

The compressed model is one stream of its compressor, or (package.segments > 1 and a container of at least
two MiB) the container cut into n byte ranges compressed independently, so that packaging can compress them
on n cores:
    8 bytes  magic b"GOLFSEGS"
    4 bytes  n (uint32)
    8n bytes each segment's compressed length (uint64)
    the n compressed streams, back to back; decompressed and joined in order they are the container.
"""

from __future__ import annotations

import json
import lzma
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from golf import artifact_checks
from golf.config import ModelConfig, section_from_dict
from golf.errors import ArtifactError

MAGIC = b"GOLFART1"
SEGMENTS_MAGIC = b"GOLFSEGS"  # a model file of independently compressed byte ranges of the container
FORMAT_VERSION = 1
PLANES_FORMAT = 2  # format 1 with multi-byte tensors stored as byte planes
MODEL_FILES = {"lzma": "model.golf.xz", "zstd": "model.golf.zst", "brotli": "model.golf.br"}
MAX_HEADER_BYTES = 64 << 20
DTYPES = {"int8": torch.int8, "float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
_NP = {"int8": np.int8, "float16": np.float16, "bfloat16": np.int16, "float32": np.float32}  # bf16 via int16
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
DTYPE_ORDER = {"int8": 0, "float16": 1, "bfloat16": 2, "float32": 3}  # the container's tensor order


# --------------------------------------------------------------------------------------------------
# Container
# --------------------------------------------------------------------------------------------------


def transpose_planes(raw: bytes, itemsize: int, inverse: bool = False) -> bytes:
    """Little-endian elements (n, k) as k byte planes (k, n), or back (inverse)."""
    if itemsize == 1:
        return bytes(raw)
    a = np.frombuffer(raw, dtype=np.uint8)
    return (a.reshape(itemsize, -1).T if inverse else a.reshape(-1, itemsize).T).tobytes()


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
        if dtype not in DTYPES:
            raise ArtifactError(f"{source}: tensor {name!r} has unknown dtype {dtype!r} (allowed: {sorted(DTYPES)})")
        if not isinstance(shape, list) or len(shape) > 8 or not all(_is_int(s) and 0 <= s < 2 ** 40 for s in shape):
            raise ArtifactError(f"{source}: tensor {name!r} has a bad shape {shape!r}")
        numel = 1
        for s in shape:
            numel *= s
        nbytes = numel * DTYPES[dtype].itemsize
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
            chunk = transpose_planes(chunk, DTYPES[dtype].itemsize, inverse=True)
        arr = np.frombuffer(chunk, dtype=np.dtype(_NP[dtype]).newbyteorder("<"))
        t = torch.from_numpy(arr.astype(_NP[dtype]))  # a native-order copy: no view into the blob
        tensors[name] = (t.view(torch.bfloat16) if dtype == "bfloat16" else t).reshape(shape)
        offset += nbytes
    if offset != len(payload):
        raise ArtifactError(f"{source}: {len(payload) - offset} bytes after the last tensor (header and data "
                            "disagree)")
    return tensors, header["spec"], header["model_config"]


# --------------------------------------------------------------------------------------------------
# Decompression
# --------------------------------------------------------------------------------------------------


def decompress(blob: bytes, method: str, source: str, max_bytes: int = artifact_checks.MAX_RAW_BYTES) -> bytes:
    """Inverse of golf.package.compress, one stream or segments (module docstring), refusing truncated streams,
    trailing bytes and output over max_bytes (by default the one bound on an artifact's raw container, so the
    package stage's read-back refuses what a loader would)."""
    if not blob.startswith(SEGMENTS_MAGIC):
        return _decompress_stream(blob, method, source, max_bytes)
    head = len(SEGMENTS_MAGIC) + 4
    n = struct.unpack_from("<I", blob, len(SEGMENTS_MAGIC))[0] if len(blob) >= head else 0
    if n < 1 or len(blob) < head + 8 * n:
        raise ArtifactError(f"{source}: segmented model file with a truncated or corrupt segment table")
    lengths = struct.unpack_from(f"<{n}Q", blob, head)
    pos = head + 8 * n
    if pos + sum(lengths) != len(blob):
        raise ArtifactError(f"{source}: its {n} segments add up to {pos + sum(lengths):,} bytes, the file has "
                            f"{len(blob):,} (truncated or corrupt artifact)")
    parts: list[bytes] = []
    for i, length in enumerate(lengths):
        parts.append(_decompress_stream(blob[pos:pos + length], method, f"{source} (segment {i + 1} of {n})",
                                        max_bytes - sum(map(len, parts)), bound=max_bytes))
        pos += length
    return b"".join(parts)


def _decompress_stream(blob: bytes, method: str, source: str, max_bytes: int, bound: int | None = None) -> bytes:
    """One compressed stream, at most max_bytes out; bound: the limit the refusal names (a segment's max_bytes
    is what the earlier segments left of the whole container's bound)."""
    too_big = f"{source}: decompresses to more than {max_bytes if bound is None else bound:,} bytes (refused)"
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
    raw = decompress(blob, method, str(mpath))
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
    from golf.model import build_model, scoring_config

    art = open_artifact(path)
    cfg = scoring_config(art.config)
    artifact_checks.check_against_model(cfg, art.spec, str(art.model_path))  # before allocating a model
    model = build_model(cfg, device)
    state = dequantize(art.tensors, art.spec, str(art.model_path))
    try:
        model.load_state_dict({k: v.to(device) for k, v in state.items()}, strict=True)
    except RuntimeError as e:
        raise ArtifactError(f"artifact {str(path)!r} does not match its model config: {e}") from None
    return model.eval()
