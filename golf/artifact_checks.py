"""Checks an artifact passes before any model is built from it: bounded size, a sane model config that
implies exactly the stored tensor table, a well-formed spec and finite weights.

An artifact is untrusted input (the eval stages and `inspect` read whatever file they are given). Without
these checks a 404-byte file could ask for a d_model-4096 model (5 GB allocated before its tensors were
compared) or 100,000 layers (minutes), an LZMA bomb could inflate to a gigabyte, and NaN weights would be
scored into a NaN BPB. Every failure is one ArtifactError line naming the file.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from golf.errors import ArtifactError

# Decompressed size bound. The cap is 16,000,000 bytes of code + compressed model; the largest real artifact
# (configs/hybrid_12.yaml, 18,964,636 params) is a ~13.5 MB file holding ~20 MB raw, i.e. ~5.7 bits per
# stored parameter after LZMA. 64 MiB raw under the cap would need < 2 bits per parameter, 3x better than
# trained int6 weights compress, so no honest artifact comes near it; anything above is refused once the
# streaming decompressor has produced 64 MiB (+1 byte), never after inflating further.
MAX_RAW_BYTES = 64 << 20

# Upper bounds on the model config of an artifact: far above any model whose tensors fit in MAX_RAW_BYTES
# (a d_model-16384 embedding of even 260 tokens is 4 MiB; 256 layers of d_model 512 are ~400 MB of int8),
# low enough that building the (meta) module tree to compare with the stored tensors takes well under a
# second. Keys not listed are bounded by ModelConfig's own ranges.
MODEL_BOUNDS = {"d_model": 16384, "d_state": 4096, "headdim": 4096, "ngroups": 1024, "chunk_size": 65536,
                "num_heads": 1024, "num_kv_heads": 1024, "bigram_buckets": 1 << 24, "bigram_dim": 16384,
                "rope_base": 1e12, "logit_softcap": 1e6}
MAX_LAYERS = 256
FLOAT_DTYPES = ("fp16", "bf16", "fp32")


def check_model_config(mcfg: dict, source: str) -> None:
    """Bounds on an artifact's raw model_config, before it is turned into a ModelConfig."""
    for key, hi in MODEL_BOUNDS.items():
        v = mcfg.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue  # a wrong type: ModelConfig's own check names it
        if v > hi if isinstance(v, int) else not (math.isfinite(v) and v <= hi):
            shown = repr(v) if not isinstance(v, int) or v.bit_length() < 200 else f"a {v.bit_length()}-bit integer"
            raise ArtifactError(f"{source}: model_config {key} is {shown}, above the bound {hi:g} for an "
                                "artifact (refused before building anything)")
    pattern = mcfg.get("layer_pattern")
    if isinstance(pattern, str) and len(pattern) > MAX_LAYERS:
        raise ArtifactError(f"{source}: model_config layer_pattern has {len(pattern):,} layers, more than "
                            f"{MAX_LAYERS} (refused before building anything)")


def check_consistent(cfg: Any, source: str) -> None:
    """The cross-key constraints params.yaml obeys (heads divide d_model, ...), on an artifact's config."""
    from golf.config import ConfigError, DataConfig, Params, _cross_checks

    try:
        _cross_checks(Params(data=DataConfig(vocab_size=cfg.vocab_size), model=cfg), f"{source} model_config")
    except ConfigError as e:
        raise ArtifactError(f"artifact {source!r}: bad model config: {e}") from None


def expected_shapes(cfg: Any, source: str) -> dict[str, list[int]]:
    """name -> shape of every tensor the config's model holds, built on the meta device (no memory)."""
    from golf.model import GolfLM

    try:
        with torch.device("meta"):
            model = GolfLM(cfg, "meta")
        return {k: list(v.shape) for k, v in model.state_dict().items()}
    except Exception as e:  # noqa: BLE001 (a crafted config the module code rejects: one line, not a traceback)
        raise ArtifactError(f"{source}: model_config does not describe a buildable model: "
                            f"{type(e).__name__}: {str(e)[:200]}") from None


def check_spec(spec: dict, source: str) -> None:
    """Every spec entry is complete, so that nothing downstream (dequantize, inspect) meets a missing key."""
    for name, s in spec.items():
        ok = isinstance(s, dict) and isinstance(s.get("shape"), list) and all(
            isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2 ** 40 for d in s["shape"])
        if ok and s.get("kind") == "int":
            ok = isinstance(s.get("bits"), int) and not isinstance(s.get("bits"), bool) and 2 <= s["bits"] <= 8
        elif ok and s.get("kind") == "float":
            ok = s.get("dtype") in FLOAT_DTYPES
        else:
            ok = False
        if not ok:
            raise ArtifactError(f"{source}: spec of {str(name)[:100]!r} is malformed: {str(s)[:200]} (expected "
                                f"kind int with bits 2..8, or kind float with dtype one of {list(FLOAT_DTYPES)}, "
                                "and a shape)")


def check_against_model(cfg: Any, spec: dict, source: str) -> None:
    """The spec (hence, through check_stored, the tensor table) is exactly the config's state dict."""
    check_consistent(cfg, source)
    want = expected_shapes(cfg, source)
    missing, extra = sorted(set(want) - set(spec)), sorted(set(spec) - set(want))
    if missing or extra:
        raise ArtifactError(f"{source}: tensors do not match model_config: missing {missing[:5]}, "
                            f"unexpected {[str(x)[:100] for x in extra[:5]]}")
    for name, shape in want.items():
        if list(spec[name]["shape"]) != shape:
            raise ArtifactError(f"{source}: tensor {name!r} is {spec[name]['shape']} but model_config implies "
                                f"{shape}")


def check_finite(tensors: dict[str, torch.Tensor], source: str) -> None:
    """No NaN or infinite stored float (a NaN weight scores a NaN BPB)."""
    for name, t in tensors.items():
        if t.is_floating_point() and t.numel() and not torch.isfinite(t).all():
            raise ArtifactError(f"{source}: tensor {name!r} holds NaN or infinite values")
