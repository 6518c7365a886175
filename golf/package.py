"""The submission artifact: a pickle-free tensor container, LZMA-compressed, plus the code to evaluate it.

Container (before compression), all little-endian:
    8 bytes  magic b"GOLFART1"
    8 bytes  header length H (uint64)
    H bytes  UTF-8 JSON: {"format": 1, "model_config": {...}, "spec": {...},
                          "tensors": [{"name", "dtype", "shape", "offset", "nbytes"}, ...]}
    payload  raw tensor bytes at the given offsets
Loading parses JSON and copies raw bytes into tensors of whitelisted dtypes: nothing is ever executed.
"""

from __future__ import annotations

import json
import lzma
import shutil
import struct
from pathlib import Path

import numpy as np
import torch

from golf.config import ModelConfig, section_from_dict, to_dict
from golf.errors import ArtifactError
from golf.io import atomic_dir, write_json_atomic

MAGIC = b"GOLFART1"
FORMAT_VERSION = 1
MODEL_FILE = "model.golf.xz"
# The golf modules an evaluator needs to rebuild and score the model: counted as code bytes.
EVAL_CODE = ("__init__.py", "config.py", "errors.py", "io.py", "data.py", "model.py", "ssm.py", "attention.py",
             "gptq.py", "package.py", "evaluate.py")
_DTYPES = {"int8": (torch.int8, np.int8), "float16": (torch.float16, np.float16),
           "float32": (torch.float32, np.float32), "bfloat16": (torch.bfloat16, None)}
_NAME_OF = {v[0]: k for k, v in _DTYPES.items()}


# --------------------------------------------------------------------------------------------------
# Serialization
# --------------------------------------------------------------------------------------------------


def serialize(tensors: dict[str, torch.Tensor], spec: dict, model_config: dict) -> bytes:
    """Deterministic bytes: tensors in name order, JSON with sorted keys."""
    entries, chunks, offset = [], [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        if t.dtype not in _NAME_OF:
            raise ArtifactError(f"tensor {name!r} has dtype {t.dtype}, not one of {sorted(_DTYPES)}")
        raw = t.view(torch.int16).numpy().tobytes() if t.dtype == torch.bfloat16 else t.numpy().tobytes()
        entries.append({"name": name, "dtype": _NAME_OF[t.dtype], "shape": list(t.shape), "offset": offset,
                        "nbytes": len(raw)})
        chunks.append(raw)
        offset += len(raw)
    header = json.dumps({"format": FORMAT_VERSION, "model_config": model_config, "spec": spec,
                         "tensors": entries}, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return MAGIC + struct.pack("<Q", len(header)) + header + b"".join(chunks)


def deserialize(blob: bytes, source: str = "<bytes>") -> tuple[dict[str, torch.Tensor], dict, dict]:
    """Inverse of serialize, validating every field against the blob's real size."""
    if len(blob) < 16 or blob[:8] != MAGIC:
        raise ArtifactError(f"{source}: not a golf artifact (bad magic)")
    (hlen,) = struct.unpack("<Q", blob[8:16])
    if hlen > len(blob) - 16:
        raise ArtifactError(f"{source}: header length {hlen} runs past the end of the data ({len(blob)} bytes)")
    try:
        header = json.loads(blob[16:16 + hlen].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{source}: header is not valid JSON ({e})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT_VERSION:
        raise ArtifactError(f"{source}: unsupported artifact format {header.get('format') if isinstance(header, dict) else header!r}")
    payload = memoryview(blob)[16 + hlen:]
    tensors = {}
    for e in header.get("tensors", []):
        try:
            name, dtype, shape, off, nbytes = e["name"], e["dtype"], e["shape"], int(e["offset"]), int(e["nbytes"])
        except (KeyError, TypeError, ValueError):
            raise ArtifactError(f"{source}: malformed tensor entry {e!r}") from None
        if dtype not in _DTYPES:
            raise ArtifactError(f"{source}: tensor {name!r} has unknown dtype {dtype!r}")
        tdtype = _DTYPES[dtype][0]
        itemsize = torch.empty((), dtype=tdtype).element_size()
        if not isinstance(shape, list) or any(not isinstance(s, int) or s < 0 for s in shape):
            raise ArtifactError(f"{source}: tensor {name!r} has a bad shape {shape!r}")
        if int(np.prod(shape, dtype=np.int64)) * itemsize != nbytes:
            raise ArtifactError(f"{source}: tensor {name!r} shape {shape} does not match its {nbytes} bytes")
        if off < 0 or off + nbytes > len(payload):
            raise ArtifactError(f"{source}: tensor {name!r} lies outside the data (truncated artifact?)")
        raw = bytes(payload[off:off + nbytes])
        if tdtype == torch.bfloat16:
            t = torch.frombuffer(bytearray(raw), dtype=torch.int16).view(torch.bfloat16) if nbytes else \
                torch.empty(0, dtype=torch.bfloat16)
        else:
            t = torch.from_numpy(np.frombuffer(raw, dtype=_DTYPES[dtype][1]).copy())
        tensors[name] = t.reshape(shape)
    return tensors, header.get("spec", {}), header.get("model_config", {})


def compress(data: bytes, method: str) -> bytes | None:
    """LZMA preset 9 extreme; zstd level 22; brotli quality 11. None if that library is missing."""
    if method == "lzma":
        return lzma.compress(data, format=lzma.FORMAT_XZ, preset=9 | lzma.PRESET_EXTREME)
    if method == "zstd":
        try:
            import zstandard
        except ImportError:
            return None
        return zstandard.ZstdCompressor(level=22).compress(data)
    if method == "brotli":
        try:
            import brotli
        except ImportError:
            return None
        return brotli.compress(data, quality=11)
    raise ArtifactError(f"unknown compressor {method!r}")


def tensor_group(name: str) -> str:
    if name.startswith(("tok_emb", "bigram.emb", "lm_head")):
        return "embeddings"
    if any(k in name for k in ("A_log", "dt_bias", "conv1d")) or name.endswith(".D"):
        return "ssm_dynamics"
    if ".mixer." in name:
        return "mamba"
    if ".attn." in name:
        return "attention"
    if ".mlp." in name:
        return "mlp"
    if name.startswith("bigram."):
        return "bigram_proj"
    return "norms_scalars"


# --------------------------------------------------------------------------------------------------
# Building and loading artifacts
# --------------------------------------------------------------------------------------------------


def code_files() -> list[Path]:
    here = Path(__file__).resolve().parent
    return [here / f for f in EVAL_CODE]


def build_artifact(out_dir: Path, tensors: dict[str, torch.Tensor], spec: dict, model_config: dict,
                   compressor: str, cap_bytes: int, compare: bool) -> dict:
    """Write out_dir/ (compressed model + code); return size metrics. Fails over the cap, writing nothing."""
    raw = serialize(tensors, spec, model_config)
    blob = compress(raw, compressor)
    model_bytes = len(blob)
    files = code_files()
    code_bytes = sum(f.stat().st_size for f in files)
    total = model_bytes + code_bytes
    groups: dict[str, int] = {}
    for name, t in tensors.items():
        g = tensor_group(name)
        groups[g] = groups.get(g, 0) + t.numel() * t.element_size()
    compressed = {compressor: model_bytes}
    if compare:
        for m in ("lzma", "zstd", "brotli"):
            if m not in compressed:
                c = compress(raw, m)
                compressed[m] = len(c) if c is not None else "unavailable"
    metrics = {"model_bytes": model_bytes, "code_bytes": code_bytes, "total_bytes": total, "cap_bytes": cap_bytes,
               "under_cap": total <= cap_bytes, "raw_bytes": len(raw), "compressor": compressor,
               "compressed": compressed, "groups_raw_bytes": groups}
    if total > cap_bytes:
        raise ArtifactError(f"artifact would be {total:,} bytes ({model_bytes:,} compressed model + {code_bytes:,} "
                            f"code), over the cap of {cap_bytes:,} bytes (package.cap_bytes); shrink the model "
                            "or quantize harder")
    with atomic_dir(out_dir) as tmp:
        (tmp / MODEL_FILE).write_bytes(blob)
        (tmp / "code").mkdir()
        for f in files:
            shutil.copyfile(f, tmp / "code" / f.name)
        write_json_atomic(tmp / "sizes.json", metrics)
    return metrics


def _model_path(path: Path) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.is_file():
        raise ArtifactError(f"artifact {str(path)!r} not found (run the package stage first)")
    return path


def load_artifact(path: str | Path) -> tuple[ModelConfig, dict[str, torch.Tensor], dict]:
    """(model config, stored tensors, spec) from an artifact folder or its model file."""
    mpath = _model_path(Path(path))
    try:
        raw = lzma.decompress(mpath.read_bytes())
    except (lzma.LZMAError, EOFError) as e:
        raise ArtifactError(f"artifact {str(mpath)!r} is not a complete LZMA stream (truncated or corrupt): {e}") \
            from None
    tensors, spec, mcfg = deserialize(raw, str(mpath))
    try:
        cfg = section_from_dict(ModelConfig, mcfg, f"{mpath} model_config")
    except Exception as e:
        raise ArtifactError(f"artifact {str(mpath)!r}: bad model config: {e}") from None
    for name, s in spec.items():
        needed = [name + ".q", name + ".scale"] if s.get("kind") == "int" else [name]
        missing = [n for n in needed if n not in tensors]
        if missing:
            raise ArtifactError(f"artifact {str(mpath)!r}: tensor(s) {missing} listed in the spec are missing")
    return cfg, tensors, spec


def load_model_from_artifact(path: str | Path, device: torch.device | str = "cpu"):
    """The dequantized model exactly as the artifact stores it."""
    from golf.gptq import dequantize
    from golf.model import build_model

    cfg, tensors, spec = load_artifact(path)
    model = build_model(cfg, device)
    state = dequantize(tensors, spec)
    try:
        model.load_state_dict({k: v.to(device) for k, v in state.items()}, strict=True)
    except RuntimeError as e:
        raise ArtifactError(f"artifact {str(path)!r} does not match its model config: {e}") from None
    return model


def inspect_artifact(path: str | Path) -> str:
    cfg, tensors, spec = load_artifact(path)
    mpath = _model_path(Path(path))
    groups: dict[str, list[int]] = {}
    for name, t in tensors.items():
        g = groups.setdefault(tensor_group(name), [0, 0])
        g[0] += t.numel() * t.element_size()
        g[1] += lzma.compress(t.contiguous().numpy().tobytes() if t.dtype != torch.bfloat16 else
                              t.view(torch.int16).numpy().tobytes(), preset=6)[:].__len__()
    code_dir = mpath.parent / "code"
    code_bytes = sum(f.stat().st_size for f in code_dir.glob("*.py")) if code_dir.is_dir() else 0
    model_bytes = mpath.stat().st_size
    lines = [f"artifact {mpath}", f"layer pattern {cfg.layer_pattern}, d_model {cfg.d_model}, vocab {cfg.vocab_size}",
             f"{'group':<16}{'raw bytes':>14}{'~lzma bytes':>14}"]
    for g in sorted(groups):
        lines.append(f"{g:<16}{groups[g][0]:>14,}{groups[g][1]:>14,}")
    lines += [f"compressed model {model_bytes:,} bytes + code {code_bytes:,} bytes = {model_bytes + code_bytes:,} "
              "bytes total", "(~lzma = each group compressed alone; the real file compresses them together)"]
    return "\n".join(lines)


def model_config_dict(cfg: ModelConfig) -> dict:
    return to_dict(cfg)
