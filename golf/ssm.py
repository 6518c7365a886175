"""Mamba-2 mixer: a pure-PyTorch reference path (chunked SSD, runs anywhere) and a CUDA fast path
(mamba-ssm's Triton kernels, causal-conv1d). Both compute the same function; tests/test_ssm.py checks the
reference against a naive step-by-step recurrence, bench/parity_gpu.py and a GPU-marked test check the fast
path against the reference.

The SSD recurrence per head h (Dao & Gu, "Transformers are SSMs", ICML 2024, section 6 / Mamba-2):
    state_t = exp(dt_t * A_h) * state_{t-1} + dt_t * x_t ⊗ B_t        state: (headdim, d_state)
    y_t     = state_t · C_t + D_h * x_t
with A_h = -exp(A_log_h) and dt_t = softplus(dt_raw_t + dt_bias_h). The mixer around it:
    in_proj(u) → [z, xBC, dt];  xBC → causal depthwise conv (width d_conv) → SiLU → [x, B, C]
    y = SSD(x, dt, A, B, C) + D x;  y = RMSNorm(y * SiLU(z)) * w  (per group);  out_proj(y)
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import logging
import math
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from golf.config import ModelConfig, field_choices
from golf.errors import GolfError
from golf.param_groups import is_mamba_dynamics

log = logging.getLogger(__name__)

NORM_EPS = 1e-5  # the gated RMSNorm's epsilon (mamba-ssm Mamba2's RMSNormGated default)
_LOW_PRECISION = (torch.float16, torch.bfloat16)
# model.ssm_scan values that keep mamba-ssm's SSD forward internals for the backward, inside golf::mamba_core only
# ("mamba_keep_dA": its backward's C·B and within-chunk log-decay gradients from golf/ssd_dcb_kernel.py;
# "mamba_keep_dx": dx, ddt's chunk part and dD from the same kernel too; "mamba_keep_chunk": every chunk-local piece;
# "mamba_keep_xy": "mamba_keep_dA" with the chunk output y and dx, ddt, dD from golf/ssd_xy_kernel.py;
# "mamba_keep_xy_pass": that with the states and state gradients from golf/ssd_kernel.py's pass kernel;
# "mamba_keep_xy_pass_bf16": that with the states kept in x's dtype; "mamba_keep_xy_pass_bf16_dt": that with the
# gradients of dt, A and dt_bias from golf/ssd_dt_kernel.py; "mamba_keep_golf": that with the passes reading the
# forward's kept dA_cumsum and dt; "mamba_keep_golf_overlap": that with golf's dCB / ddA kernel on a second stream)
KEEP_SCANS = ("mamba_keep", "mamba_keep_dA", "mamba_keep_dx", "mamba_keep_chunk", "mamba_keep_xy",
              "mamba_keep_xy_pass", "mamba_keep_xy_pass_bf16", "mamba_keep_xy_pass_bf16_dt", "mamba_keep_golf",
              "mamba_keep_golf_overlap")


# --------------------------------------------------------------------------------------------------
# Reference SSD (chunked, pure PyTorch)
# --------------------------------------------------------------------------------------------------


def compute_dtype(t: torch.Tensor) -> torch.dtype:
    """The dtype SSM math runs in for activations of t's dtype: fp32 for bf16/fp16/fp32, fp64 for fp64 (the
    float64 tests compare paths exactly), as the Triton kernels accumulate."""
    return torch.promote_types(t.dtype, torch.float32)


def _segsum(a: torch.Tensor) -> torch.Tensor:
    """(..., L) log-decays → (..., L, L) with [i, j] = sum a[j+1..i] for i >= j, -inf above the diagonal."""
    L = a.shape[-1]
    cs = torch.cumsum(a, dim=-1)
    seg = cs[..., :, None] - cs[..., None, :]  # (..., L, L)
    mask = torch.ones(L, L, dtype=torch.bool, device=a.device).tril()
    return seg.masked_fill(~mask, float("-inf"))


def ssd_reference(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                  chunk_size: int, initial_state: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked SSD scan without the D skip.

    x: (b, l, h, p)  dt: (b, l, h) (already softplus'ed)  A: (h,)  B, C: (b, l, g, n) with h % g == 0
    initial_state: (b, h, p, n) or None.  Returns y (b, l, h, p) and the final state (b, h, p, n).
    """
    b, l, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    B = B.repeat_interleave(h // g, dim=2)  # (b, l, h, n)
    C = C.repeat_interleave(h // g, dim=2)
    pad = (-l) % chunk_size
    if pad:  # dt = 0 on padding: no decay and no input, so outputs and the final state are unchanged
        x, dt = F.pad(x, (0, 0, 0, 0, 0, pad)), F.pad(dt, (0, 0, 0, pad))
        B, C = F.pad(B, (0, 0, 0, 0, 0, pad)), F.pad(C, (0, 0, 0, 0, 0, pad))
    c = (l + pad) // chunk_size
    xd = (x * dt[..., None]).reshape(b, c, chunk_size, h, p)  # (b, c, L, h, p)
    a = (dt * A).reshape(b, c, chunk_size, h).permute(0, 3, 1, 2)  # (b, h, c, L) log-decay per step
    Bc = B.reshape(b, c, chunk_size, h, n)
    Cc = C.reshape(b, c, chunk_size, h, n)
    a_cum = torch.cumsum(a, dim=-1)  # (b, h, c, L)

    # 1. within each chunk: y_i = sum_{j<=i} C_i·B_j exp(a_{j+1..i}) xd_j
    decay = torch.exp(_segsum(a))  # (b, h, c, L, L)
    y = torch.einsum("bclhn,bcshn,bhcls,bcshp->bclhp", Cc, Bc, decay, xd)

    # 2. each chunk's contribution to the state at its end
    decay_to_end = torch.exp(a_cum[..., -1:] - a_cum)  # (b, h, c, L)
    states = torch.einsum("bclhn,bhcl,bclhp->bchpn", Bc, decay_to_end, xd)  # (b, c, h, p, n)

    # 3. pass states across chunks (a recurrence over c chunks, done as one decay matrix)
    if initial_state is None:
        initial_state = torch.zeros(b, h, p, n, dtype=x.dtype, device=x.device)
    states = torch.cat([initial_state[:, None], states], dim=1)  # (b, c+1, h, p, n)
    chunk_decay = torch.exp(_segsum(F.pad(a_cum[..., -1], (1, 0))))  # (b, h, c+1, c+1)
    states = torch.einsum("bhzc,bchpn->bzhpn", chunk_decay, states)
    states, final_state = states[:, :-1], states[:, -1]  # state entering each chunk; after the last

    # 4. the state entering each chunk, read out at every position of the chunk
    y = y + torch.einsum("bclhn,bchpn,bhcl->bclhp", Cc, states, torch.exp(a_cum))
    y = y.reshape(b, c * chunk_size, h, p)[:, :l]
    return y, final_state


def ssd_scan_reference(x: torch.Tensor, dt_raw: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                       D: torch.Tensor, dt_bias: torch.Tensor, chunk_size: int,
                       initial_state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The mixer's whole scan as the Triton kernel computes it: dt = softplus(dt_raw + dt_bias), the SSD scan
    and the D skip in fp32 (fp64 stays fp64), y stored in x's dtype. Shapes as in ssd_reference, dt_raw like
    dt, D and dt_bias (h,). Returns y (b, l, h, p) in x's dtype and the final state (b, h, p, n) in the
    compute dtype."""
    ct = compute_dtype(x)  # fp32 scan for bf16 inputs; fp64 stays fp64
    dt = F.softplus(dt_raw.to(ct) + dt_bias.to(ct))  # (b, l, h)
    y, final = ssd_reference(x.to(ct), dt, A.to(ct), B.to(ct), C.to(ct), chunk_size,
                             None if initial_state is None else initial_state.to(ct))
    return (y + x.to(ct) * D.to(ct)[:, None]).to(x.dtype), final


def gated_rms_norm_reference(y: torch.Tensor, z: torch.Tensor, weight: torch.Tensor, ngroups: int,
                             eps: float = NORM_EPS) -> torch.Tensor:
    """RMSNorm(y * SiLU(z)) per group of channels, times weight (Mamba-2's norm_before_gate=False).

    y, z: (..., d). Computed in fp32 (fp64 stays fp64), returned in y's dtype, like the Triton kernel."""
    ct = compute_dtype(y)
    g = y.to(ct) * F.silu(z.to(ct))  # (..., d)
    g = g.unflatten(-1, (ngroups, -1))  # (..., G, d/G)
    g = g * torch.rsqrt(g.square().mean(-1, keepdim=True) + eps)
    return (g.flatten(-2) * weight.to(ct)).to(y.dtype)


def causal_conv_silu_reference(xBC_t: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Depthwise conv over a (B, C, T + W - 1) input already left-padded (or prefixed with carried state)
    → SiLU → (B, C, T). Computed in fp32 with autocast off (causal-conv1d also accumulates in fp32), returned
    in the input's dtype."""
    ct = compute_dtype(xBC_t)
    with torch.autocast(xBC_t.device.type, enabled=False):
        out = F.conv1d(xBC_t.to(ct), weight.to(ct), bias.to(ct), groups=xBC_t.shape[1])  # (B, C, T)
        return F.silu(out).to(xBC_t.dtype)


# --------------------------------------------------------------------------------------------------
# Fast path: which kernels exist here
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SSMKernels:
    """The mixer's kernels, decided once at model build.

    path: "reference" (pure PyTorch), "triton" (mamba-ssm Triton SSD scan, or golf's own with model.ssm_scan
    "golf", + Triton gated RMSNorm, or the PyTorch norm with model.gated_norm "torch"; the conv from
    causal-conv1d when importable, else PyTorch, or golf's own with model.ssm_conv "golf") or "fused"
    (mamba_split_conv1d_scan_combined: conv, scan and gated norm in one autograd function that recomputes the
    conv in backward; needs causal-conv1d; under compile_mode "opaque" golf's one custom op golf::mamba_core,
    golf/mixer_op.py, over the same kernels, with scan, conv and norm set to the triton path's opaque ops for the
    calls with carried state).
    """
    path: str = "reference"
    scan: Callable | None = None  # mamba_chunk_scan_combined, or golf.ssd_kernel.ssd_scan
    norm: Callable | None = None  # mamba-ssm layernorm_gated.rmsnorm_fn
    conv: Callable | None = None  # causal_conv1d_fn, or golf's (golf.ssm_ops.golf_conv_kernels' "conv")
    fused: Callable | None = None  # mamba_split_conv1d_scan_combined, or golf.mixer_op.fused ("opaque")
    # model.ssm_compile: "disable" runs the kernels above outside torch.compile's graph (a clean graph break
    # at each call); "trace" lets Dynamo trace into them (autograd.Function + Triton launches), breaking the
    # graph itself wherever it cannot; "opaque": scan, conv and norm are golf.ssm_ops' wrappers of the same
    # kernels as custom operators, which Dynamo puts in its graph as single nodes
    compile_mode: str = "disable"
    scan_kernel: str = "mamba"  # model.ssm_scan: whose kernels `scan` runs, "mamba" (mamba-ssm's) or "golf"
    # (KEEP_SCANS: the fused path's op under "opaque" keeps mamba-ssm's forward internals for its backward)
    conv_kernel: str = "causal_conv1d"  # model.ssm_conv: whose kernels `conv` runs, causal-conv1d's or "golf"
    norm_kernel: str = "mamba"  # the fused path's gated norm under "opaque": mamba-ssm's, or "golf" (gated_norm golf)

    def call(self, fn: Callable, *args, **kwargs):
        """Call one of the kernels above as compile_mode says."""
        return fn(*args, **kwargs) if self.compile_mode in ("trace", "opaque") else _eager(fn, *args, **kwargs)

    @property
    def label(self) -> str:
        """For model.kernel_paths and logs, e.g. "triton+causal_conv1d", "triton+causal_conv1d+torch_norm",
        "triton+causal_conv1d+opaque" (the kernels as golf's custom ops), "triton+golf_scan+causal_conv1d"
        (golf's own SSD scan kernels, model.ssm_scan "golf"), "triton+golf_conv" (golf's own conv kernels,
        model.ssm_conv "golf"), "fused" (mamba-ssm's one op) or "fused+golf_norm+keep_states+opaque" (golf's one op,
        golf/mixer_op.py, with golf's norm kernels and the scan's internals kept for its backward; "+golf_dA",
        "+golf_dx", "+golf_chunk", "+golf_xy", "+golf_xy_pass", ... with model.ssm_scan "mamba_keep_dA",
        "mamba_keep_dx", "mamba_keep_chunk", "mamba_keep_xy", "mamba_keep_xy_pass", ..., "+golf_ssd" and
        "+golf_ssd_overlap" with "mamba_keep_golf" and "mamba_keep_golf_overlap";
        "+golf_conv" with model.ssm_conv "golf")."""
        if self.path == "fused":
            keep = self.scan_kernel.removeprefix("mamba_keep_") if self.scan_kernel.startswith("mamba_keep_") else ""
            keep = "ssd" + keep[4:] if keep.startswith("golf") else keep  # mamba_keep_golf*: golf's SSD kernels
            return self.path + ("+golf_norm" if self.norm_kernel == "golf" else "") + (
                "+keep_states" if self.scan_kernel in KEEP_SCANS else "") + ("+golf_" + keep if keep else "") + (
                "+golf_conv" if self.conv_kernel == "golf" else "") + (
                "+opaque" if self.compile_mode == "opaque" else "")
        extras = {"mamba": "", "golf": "+golf_scan", "golf_split": "+golf_split_scan"}[self.scan_kernel]
        if self.conv is not None:
            extras += {"causal_conv1d": "+causal_conv1d", "golf": "+golf_conv"}[self.conv_kernel]
        extras += "+torch_norm" if self.norm is None else ""
        extras += "+opaque" if self.compile_mode == "opaque" else ""
        return self.path + (extras if self.path == "triton" else "")


def _import_mamba_triton() -> dict | None:
    """mamba-ssm's Triton entry points ({"scan", "norm", "fused"}), or None when mamba-ssm is missing.

    mamba-ssm releases up to 2.3.2.post1 cannot be imported without their CUDA extension: the package
    __init__ imports ops/selective_scan_interface.py, which does an unguarded `import selective_scan_cuda`
    (the Mamba-1 kernel, which we never use). The Triton SSD kernels themselves need no extension, and the
    subpackages on their import path (mamba_ssm.ops, .ops.triton, .utils) have empty __init__ files. So when
    the normal import fails for exactly that reason, we register a bare package object for `mamba_ssm`
    (same __path__, its __init__ not executed) and import only the Triton submodules we need. Any other
    import failure is logged and treated as "not available".
    """
    if importlib.util.find_spec("mamba_ssm") is None:
        return None

    def load() -> dict:
        ssd = importlib.import_module("mamba_ssm.ops.triton.ssd_combined")
        norm = importlib.import_module("mamba_ssm.ops.triton.layernorm_gated")
        return {"scan": ssd.mamba_chunk_scan_combined, "fused": ssd.mamba_split_conv1d_scan_combined,
                "norm": norm.rmsnorm_fn,
                # the forward/backward functions that MambaChunkScanCombinedFn and LayerNormFn call (private
                # names, as of 2.3.2.post1): model.ssm_compile "opaque" wraps these (golf/ssm_ops.py)
                "scan_fwd": getattr(ssd, "_mamba_chunk_scan_combined_fwd", None),
                "scan_bwd": getattr(ssd, "_mamba_chunk_scan_combined_bwd", None),
                "norm_fwd": getattr(norm, "_layer_norm_fwd", None), "norm_bwd": getattr(norm, "_layer_norm_bwd", None),
                # model.ssm_scan "mamba_keep" calls the SSD's pieces one by one (golf.mixer_op.SSD_PARTS)
                "ssd_module": ssd}

    try:
        return load()
    except ImportError as e:
        if "selective_scan_cuda" not in str(e):
            log.warning("mamba-ssm found but its Triton kernels failed to import: %s", e)
            return None
    for name in [m for m in sys.modules if m == "mamba_ssm" or m.startswith("mamba_ssm.")]:
        del sys.modules[name]  # drop the half-initialized package left by the failed import
    spec = importlib.util.find_spec("mamba_ssm")
    pkg = types.ModuleType("mamba_ssm")
    pkg.__path__ = list(spec.submodule_search_locations)
    pkg.__spec__ = spec
    sys.modules["mamba_ssm"] = pkg
    try:
        return load()
    except ImportError as e:
        log.warning("mamba-ssm Triton kernels unavailable: %s", e)
        return None


def ssm_autotune_choices(prefix: str = "mamba_ssm.ops.triton.") -> dict[str, dict[str, str]]:
    """The launch configs Triton's autotuner picked in this process for mamba-ssm's kernels:
    {"<module>.<kernel>": {"<autotune key>": "<config>"}}, empty when none ran (CPU, reference path).

    mamba-ssm autotunes its SSD kernels in every new process by timing candidate configs (the saved Triton
    cache held no autotuning results, bench/RESULTS.md); one config stepped 13% apart on two lent H200s, and a
    different pick is one candidate cause, so the train stage's provenance keeps them. Found by duck typing
    (an object with a `configs` list and a `cache` dict, as triton.runtime.autotuner.Autotuner has), so
    triton is not imported."""
    found: dict[str, dict[str, str]] = {}
    seen: set[int] = set()  # a kernel imported into another module is the same object: listed once
    for modname, module in sorted(sys.modules.items()):
        if not modname.startswith(prefix) or module is None:
            continue
        for attr, obj in sorted(vars(module).items()):
            cache = getattr(obj, "cache", None)
            if (isinstance(cache, dict) and cache and isinstance(getattr(obj, "configs", None), list)
                    and id(obj) not in seen):
                seen.add(id(obj))
                found[f"{modname}.{attr}"] = {str(k): str(v) for k, v in cache.items()}
    return found


def _import_causal_conv1d() -> Callable | None:
    if importlib.util.find_spec("causal_conv1d") is None:
        return None
    try:
        from causal_conv1d import causal_conv1d_fn
        return causal_conv1d_fn
    except ImportError as e:  # e.g. a wheel built for another torch/CUDA
        log.warning("causal-conv1d found but failed to import: %s", e)
        return None


def _import_causal_conv1d_ops() -> dict | None:
    """causal-conv1d's forward op and backward function, which its CausalConv1dFn calls (module
    causal_conv1d.cpp_functions, 1.7.0), for model.ssm_compile "opaque"; None when that module is missing."""
    try:
        from causal_conv1d import cpp_functions
        return {"conv_fwd": cpp_functions._causal_conv1d_fwd_cpp, "conv_bwd": cpp_functions.causal_conv1d_bwd_function}
    except (ImportError, AttributeError) as e:
        log.warning("causal-conv1d's cpp_functions unavailable (%s): model.ssm_compile 'opaque' uses the PyTorch "
                    "conv", e)
        return None


def resolve_ssm_backend(requested: str, device: torch.device | str, compile_mode: str = "disable",
                        gated_norm: str = "kernel", scan: str = "mamba", conv: str = "causal_conv1d") -> SSMKernels:
    """Decide the SSM kernels once, at model build.

    "auto": the Triton path on CUDA when mamba-ssm imports, else the reference. "triton" / "fused": that path
    or a GolfError (never a silent fallback). "reference": pure PyTorch everywhere. compile_mode: see
    SSMKernels (the reference path is plain PyTorch and always traced, also under "opaque": as a custom op it
    would only hide its math from inductor; the ops' CPU kernels are tested through SSMKernels built by hand,
    tests/test_ssm_opaque.py). gated_norm "torch" leaves the triton path's gated RMSNorm to PyTorch (no `norm`
    kernel); the fused path has the norm inside its one op: mamba-ssm's, or under compile_mode "opaque" (golf's one
    custom op, golf/mixer_op.py) golf's own with gated_norm "golf", which every other path refuses. scan
    (model.ssm_scan) "golf" runs golf's own SSD kernels (golf/ssd_kernel.py) in the triton path's scan, under
    every compile_mode; the fused path refuses it, the reference path ignores it (as gated_norm); "mamba_keep"
    (mamba-ssm's kernels, the backward reusing the forward's internals) exists only in golf's fused op. conv
    (model.ssm_conv) "golf" runs golf's own conv kernels (golf/conv_kernel.py) as the triton path's conv, whether or
    not causal-conv1d imports, and inside golf's fused op (mamba-ssm's refuses it); "causal_conv1d" is
    causal-conv1d's where it imports, else PyTorch's."""
    # direct callers (tests, bench) bypass the config's checks
    for key, value in (("ssm_compile", compile_mode), ("gated_norm", gated_norm), ("ssm_scan", scan),
                       ("ssm_conv", conv)):
        allowed = field_choices(ModelConfig, key)
        if value not in allowed:
            raise GolfError(f"model.{key} must be one of {list(allowed)}, got {value!r}")
    if requested == "reference":
        return SSMKernels()
    in_core = requested == "fused" and compile_mode == "opaque"  # golf::mamba_core (golf/mixer_op.py)
    if gated_norm == "golf" and not in_core:
        raise GolfError("model.gated_norm 'golf' runs golf's norm kernels inside golf::mamba_core, the fused path "
                        "as one custom op: use model.ssm_backend 'fused' with model.ssm_compile 'opaque', or "
                        "gated_norm 'kernel' or 'torch'")
    if scan in KEEP_SCANS and not in_core:
        raise GolfError(f"model.ssm_scan {scan!r} keeps the SSD forward's internals for its backward inside "
                        "golf::mamba_core: use model.ssm_backend 'fused' with model.ssm_compile 'opaque', or ssm_scan "
                        "'mamba'")
    on_cuda = torch.device(device).type == "cuda"
    mamba = _import_mamba_triton() if on_cuda else None
    # golf's conv needs no causal-conv1d (the fused path takes golf's only in its one custom op, below)
    cc1d = _import_causal_conv1d() if (on_cuda and mamba is not None and conv == "causal_conv1d") else None
    if requested == "fused":
        if gated_norm == "torch":
            raise GolfError("model.gated_norm 'torch' does not apply to model.ssm_backend 'fused', whose one op "
                            "includes the norm; use ssm_backend 'triton' or gated_norm 'kernel'")
        if scan not in ("mamba", *KEEP_SCANS):
            raise GolfError(f"model.ssm_scan {scan!r} does not apply to model.ssm_backend 'fused', whose one op "
                            "includes mamba-ssm's scan; use ssm_backend 'triton' or ssm_scan 'mamba' (or "
                            "'mamba_keep' under ssm_compile 'opaque')")
        if conv != "causal_conv1d" and not in_core:
            raise GolfError(f"model.ssm_conv {conv!r} does not apply to model.ssm_backend 'fused' outside "
                            "ssm_compile 'opaque': mamba-ssm's one op includes causal-conv1d's conv; use ssm_compile "
                            "'opaque' (golf's one op, golf/mixer_op.py), ssm_backend 'triton' or ssm_conv "
                            "'causal_conv1d'")
        if mamba is None or (cc1d is None and conv == "causal_conv1d"):
            raise GolfError("model.ssm_backend is 'fused' but it needs a CUDA device with mamba-ssm's Triton "
                            "kernels and causal-conv1d importable; use 'triton', 'auto' or 'reference'")
        if in_core:
            return _opaque_fused_kernels(mamba, gated_norm, scan, conv)
        return SSMKernels("fused", mamba["scan"], mamba["norm"], cc1d, mamba["fused"], compile_mode)
    if mamba is None:
        if requested == "triton":
            raise GolfError("model.ssm_backend is 'triton' but mamba-ssm's Triton SSD kernel is not usable here "
                            "(needs CUDA and `pip install mamba-ssm`); use 'auto' or 'reference'")
        return SSMKernels()
    norm = mamba["norm"] if gated_norm == "kernel" else None
    golf = _import_golf_kernels("ssm_scan", scan) if scan != "mamba" else None
    golf_conv = _import_golf_kernels("ssm_conv", conv) if conv == "golf" else None
    if compile_mode == "opaque":
        return _opaque_kernels(mamba, cc1d is not None, gated_norm, golf, scan, golf_conv)
    return SSMKernels("triton", golf["scan"] if golf else mamba["scan"], norm,
                      golf_conv["conv"] if golf_conv else cc1d, compile_mode=compile_mode, scan_kernel=scan,
                      conv_kernel=conv)


# model.ssm_scan / ssm_conv / gated_norm: what golf's own kernels replace, the file they live in, the libraries'
# choice
_GOLF_KERNELS = {"ssm_scan": ("scan", "ssd_kernel.py", "mamba"), "ssm_conv": ("conv", "conv_kernel.py", "causal_conv1d"),
                 "gated_norm": ("gated norm", "gated_norm_kernel.py", "kernel")}


def _import_golf_kernels(setting: str, value: str) -> dict:
    """golf's own kernels for model.<setting> = value (golf.ssm_ops.golf_scan_kernels / golf_conv_kernels), or a
    GolfError saying what is missing. Imported only here: golf/ssd_kernel.py and golf/conv_kernel.py import triton
    at module top, which a CPU install may lack; and through golf.ssm_ops, which artifacts do not ship
    (golf.package.TRAINING_ONLY), so that their code stays out of every artifact's code bytes too."""
    what, module_file, default = _GOLF_KERNELS[setting]
    try:
        from golf import mixer_op, ssm_ops

        if setting == "gated_norm":
            return mixer_op.golf_norm_kernels()
        return ssm_ops.golf_scan_kernels(value) if setting == "ssm_scan" else ssm_ops.golf_conv_kernels()
    except ImportError as e:  # triton missing, or golf/ssm_ops.py (training code) in an artifact's code
        raise GolfError(f"model.{setting} is {value!r} but golf's Triton {what} kernels do not import here ({e}): "
                        f"they need triton (`pip install triton`) and golf/{module_file}, golf/ssm_ops.py (training "
                        f"code, which artifacts do not ship); use model.{setting} {default!r}") from None


def _opaque_kernels(mamba: dict, with_conv: bool, gated_norm: str, golf: dict | None = None,
                    scan: str = "mamba", golf_conv: dict | None = None) -> SSMKernels:
    """The triton path with every kernel a golf custom op (golf/ssm_ops.py), its CUDA kernels bound to
    mamba-ssm's and causal-conv1d's functions, the scan's to golf's own when `golf` (_import_golf_kernels) is
    given, the conv's to golf's own when `golf_conv` is. Without golf_conv, the conv falls
    back to PyTorch (traced) when causal-conv1d lacks the functions the op calls."""
    from golf import ssm_ops

    keys = ([] if golf else ["scan_fwd", "scan_bwd"]) + (["norm_fwd", "norm_bwd"] if gated_norm == "kernel" else [])
    missing = [k for k in keys if mamba.get(k) is None]
    if missing:
        raise GolfError(f"model.ssm_compile 'opaque' calls mamba-ssm's internal functions ({', '.join(missing)} "
                        "missing here; mamba-ssm 2.3.2.post1 has them): use ssm_compile 'trace' or 'disable'")
    if golf_conv:
        conv_ops = {"golf_conv_fwd": golf_conv["conv_fwd"], "golf_conv_bwd": golf_conv["conv_bwd"]}
        conv_op = ssm_ops.conv_golf
    else:
        conv_ops = _import_causal_conv1d_ops() if with_conv else None
        conv_op = ssm_ops.conv if conv_ops else None
    golf_ops = {ssm_ops._fwd_key(scan): golf["scan_fwd"], ssm_ops._bwd_key(scan): golf["scan_bwd"]} if golf else {}
    ssm_ops.bind_cuda({k: mamba[k] for k in keys} | golf_ops | (conv_ops or {}))
    op = {"mamba": ssm_ops.scan, "golf": ssm_ops.scan_golf, "golf_split": ssm_ops.scan_golf_split}[scan]
    return SSMKernels("triton", op, ssm_ops.norm if gated_norm == "kernel" else None, conv_op,
                      compile_mode="opaque", scan_kernel=scan, conv_kernel="golf" if golf_conv else "causal_conv1d")


def _opaque_fused_kernels(mamba: dict, gated_norm: str, scan: str = "mamba", conv: str = "causal_conv1d"
                          ) -> SSMKernels:
    """The fused path as one golf custom op (golf/mixer_op.py: golf::mamba_core) with mamba-ssm's scan (its
    backward recomputing the forward's chunk states, or with scan "mamba_keep" reusing them), the conv of `conv`
    (causal-conv1d's, or "golf": golf's own) and the gated norm of `gated_norm` ("kernel": mamba-ssm's, "golf":
    golf's own) inside; the triton path's opaque ops beside it, with the same conv, for the calls with carried
    state (eval), which take the unfused pieces."""
    from golf import mixer_op, ssm_ops

    golf_conv = _import_golf_kernels("ssm_conv", conv) if conv == "golf" else None
    pieces = _opaque_kernels(mamba, True, "kernel", golf_conv=golf_conv)
    if pieces.conv not in (ssm_ops.conv, ssm_ops.conv_golf):
        raise GolfError("model.ssm_backend 'fused' under model.ssm_compile 'opaque' calls causal-conv1d's "
                        "cpp_functions (causal-conv1d 1.7.0 has them; missing here): use ssm_compile 'trace'")
    if gated_norm == "golf":
        ssm_ops.bind_cuda(_import_golf_kernels("gated_norm", "golf"))
    if scan in KEEP_SCANS:
        try:
            ssm_ops.bind_cuda(mixer_op.ssd_parts(mamba.get("ssd_module")))
        except KeyError as e:
            raise GolfError(f"model.ssm_scan {scan!r} calls mamba-ssm's SSD pieces by name ({e.args[0]} missing "
                            "here; mamba-ssm 2.3.2.post1 has them): use ssm_scan 'mamba'") from None
    if scan in mixer_op.GOLF_BWD:
        try:
            ssm_ops.bind_cuda(mixer_op.golf_dcb_kernels())
            if scan in mixer_op.GOLF_XY:
                ssm_ops.bind_cuda(mixer_op.golf_xy_kernels())
        except ImportError as e:
            raise GolfError(f"model.ssm_scan {scan!r} calls golf's Triton kernels (golf/ssd_dcb_kernel.py, "
                            f"golf/ssd_xy_kernel.py, golf/ssd_kernel.py, golf/ssd_dt_kernel.py), which do not import "
                            f"here ({e}): install triton, or use ssm_scan 'mamba_keep'") from None
    norm_impl = "golf" if gated_norm == "golf" else "mamba"
    return dataclasses.replace(pieces, path="fused", fused=mixer_op.core_call(norm_impl, scan, conv),
                               norm_kernel=norm_impl, scan_kernel=scan)


def _hi(t: torch.Tensor) -> torch.Tensor:
    """At least fp32 (fp64 stays fp64: the float64 tests compare paths exactly)."""
    return t.to(compute_dtype(t))


@torch.compiler.disable
def _eager(fn: Callable, *args, **kwargs):
    """Run a third-party kernel outside torch.compile's graph. Dynamo may or may not manage to trace
    mamba-ssm's autotuned Triton launches inside their autograd.Functions; a clean graph break makes the
    compiled model behave the same on every torch/triton version (the kernels are already fused)."""
    return fn(*args, **kwargs)


# --------------------------------------------------------------------------------------------------
# The mixer
# --------------------------------------------------------------------------------------------------


class Mamba2Mixer(nn.Module):
    """in_proj → [z, xBC, dt]; causal depthwise conv + SiLU on xBC; SSD scan; gated RMSNorm; out_proj.

    Precision: the dynamics parameters (A_log, dt_bias, D, conv1d.*) stay fp32 even when the module is cast
    to bf16/fp16 (`_apply` below restores them), are used in fp32 by both paths, and are kept out of every
    quantization step (golf.param_groups.is_mamba_dynamics). Training runs under bf16 autocast with fp32 master
    weights, so there they are fp32 anyway.
    """

    def __init__(self, d_model: int, d_state: int, d_conv: int, expand: float, headdim: int, ngroups: int,
                 chunk_size: int, linear_cls=nn.Linear, kernels: SSMKernels | None = None,
                 in_proj_multiple: int = 1):
        super().__init__()
        self.d_inner = int(expand * d_model)
        self.d_state, self.d_conv, self.headdim, self.ngroups = d_state, d_conv, headdim, ngroups
        self.nheads = self.d_inner // headdim
        self.chunk_size = chunk_size
        self.conv_dim = self.d_inner + 2 * ngroups * d_state
        # in_proj's output, [z, xBC, dt], optionally followed by zero rows up to a multiple of in_proj_multiple:
        # e.g. 1612 → 1664 features for d_model 512, expand 1.5, d_state 32, so that the GEMM's width is a
        # multiple of 8/64 and cuBLAS can use aligned kernels (1612 gets 2-element-aligned ones, bench/RESULTS.md)
        # and xBC's row stride suits causal-conv1d without a copy. The padding rows are never read: their
        # gradient is exactly zero, so from zero init they stay zero under Muon, weight decay, EMA and QAT.
        self.d_in_proj = 2 * self.d_inner + 2 * ngroups * d_state + self.nheads
        self.in_proj_pad = -self.d_in_proj % in_proj_multiple
        self.in_proj = linear_cls(d_model, self.d_in_proj + self.in_proj_pad, bias=False)
        if self.in_proj_pad:
            with torch.no_grad():
                self.in_proj.weight[self.d_in_proj:].zero_()
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, d_conv, groups=self.conv_dim, bias=True)
        # Mamba-2 defaults (Dao & Gu 2024; mamba_ssm Mamba2: A_init_range=(1, 16), dt_min=1e-3, dt_max=0.1):
        # A = -uniform(1, 16); dt log-uniform in [1e-3, 1e-1], dt_bias = softplus⁻¹(dt) so that
        # softplus(0 + dt_bias) = dt at init.
        self.A_log = nn.Parameter(torch.log(torch.empty(self.nheads).uniform_(1.0, 16.0)))
        dt = torch.exp(torch.rand(self.nheads) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        self.D = nn.Parameter(torch.ones(self.nheads))
        self.norm_weight = nn.Parameter(torch.ones(self.d_inner))
        self.out_proj = linear_cls(self.d_inner, d_model, bias=False)
        self.kernels = kernels or SSMKernels()
        if self.kernels.path == "fused" and self.kernels.compile_mode == "opaque" and self.conv_dim % 8:
            raise GolfError(f"model.ssm_backend 'fused' under ssm_compile 'opaque' needs the conv's width (d_inner + "
                            f"2 x ngroups x d_state = {self.conv_dim} here) to be a multiple of 8 for causal-conv1d's "
                            "channel-last layout: change expand or d_state, or use ssm_backend 'triton'")

    # ----------------------------------------------------------------------------------------------
    def _apply(self, fn, recurse=True):
        """Casts (model.bfloat16(), .to(dtype)) skip the dynamics parameters; device moves still apply.

        nn.Module._apply swaps each parameter's data for fn(data); we keep a handle on the fp32 data first
        and, where fn produced a 16-bit float, put the fp32 values back (moved to the new device). No
        rounding happens: the fp32 values are never passed through bf16."""
        before = {n: p.data for n, p in self.named_parameters() if is_mamba_dynamics(n)}
        super()._apply(fn, recurse)
        for n, p in self.named_parameters():
            old = before.get(n)
            if old is not None and p.dtype in _LOW_PRECISION and old.dtype not in _LOW_PRECISION:
                p.data = old.to(device=p.device)
                if p.grad is not None:
                    p.grad = p.grad.to(old.dtype)
        return self

    def forward(self, u: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None,
                return_state: bool = False, out_scale: torch.Tensor | None = None):
        """u: (B, T, d_model) → (B, T, d_model); out_scale (d_model,) scales the output channels through
        out_proj's weight (a QATLinear's out_scale; model.block_norm "golf_fold").

        state: (conv_state (B, conv_dim, d_conv-1): the last d_conv-1 pre-conv xBC inputs,
                ssm_state (B, H, P, N) fp32) carried from the previous window, or None (zeros).
        With return_state, also returns the state after the last position."""
        k = self.kernels
        zxbcdt = self.in_proj(u)  # (B, T, d_in_proj + in_proj_pad)
        A = -torch.exp(_hi(self.A_log))  # (H,)
        if k.path == "fused" and state is None and not return_state:
            # conv + SiLU + scan + D + gated norm in one op; out_proj stays a module call so QAT and the
            # Hessian hooks see it. mamba-ssm's fused op infers its layout from the last dim, so it gets exactly
            # [z, xBC, dt] (a copy when in_proj is padded); golf::mamba_core ("opaque") reads around the padding.
            if self.in_proj_pad and k.compile_mode != "opaque":
                zxbcdt = zxbcdt[..., :self.d_in_proj].contiguous()  # (B, T, d_in_proj)
            y = k.call(k.fused, zxbcdt, self.conv1d.weight.squeeze(1), self.conv1d.bias, self.dt_bias, A,
                       self.D, self.chunk_size, rmsnorm_weight=self.norm_weight, rmsnorm_eps=NORM_EPS,
                       headdim=self.headdim, ngroups=self.ngroups, norm_before_gate=False)  # (B, T, d_inner)
            return self._out(y, out_scale)
        y, z, new_state = self._mix(zxbcdt, A, state, return_state)
        if k.norm is not None:
            y = k.call(k.norm, y, self.norm_weight, None, z=z, eps=NORM_EPS,
                       group_size=self.d_inner // self.ngroups, norm_before_gate=False)
        else:
            y = gated_rms_norm_reference(y, z, self.norm_weight, self.ngroups)
        out = self._out(y, out_scale)  # (B, T, d_model)
        return (out, new_state) if return_state else out

    def _out(self, y: torch.Tensor, out_scale: torch.Tensor | None) -> torch.Tensor:
        """out_proj(y), its output channels scaled by out_scale (d_model,) through the weight where given."""
        return self.out_proj(y) if out_scale is None else self.out_proj(y, out_scale=out_scale)

    def _mix(self, zxbcdt: torch.Tensor, A: torch.Tensor, state, return_state: bool):
        """Conv + scan (+ D skip). Returns y (B, T, d_inner) in the activations' dtype, z, and the new state."""
        bsz, T, _ = zxbcdt.shape
        k = self.kernels
        z, xBC, dt, _ = torch.split(zxbcdt, [self.d_inner, self.conv_dim, self.nheads, self.in_proj_pad], dim=-1)
        new_conv_state = None
        if k.conv is not None and state is None and not return_state:
            # causal-conv1d's channel-last layout wants strides divisible by 8. xBC's row stride inside zxbcdt
            # is in_proj's width: 1612 unpadded (not a multiple of 8: copy xBC out), 1664 with
            # in_proj_multiple 64 (used in place, as mamba_ssm's Mamba2 passes its split of zxbcdt). golf's
            # kernels (model.ssm_conv "golf") take any strides: no copy. xBC starts d_inner elements into each
            # row of in_proj's fresh output, so its offset is aligned iff d_inner is; asking the tensor
            # (storage_offset()) would break Dynamo's graph in every Mamba layer.
            in_place = zxbcdt.is_contiguous() and xBC.stride(1) % 8 == 0 and self.d_inner % 8 == 0
            if k.conv_kernel == "causal_conv1d" and not in_place:
                xBC = xBC.contiguous()
            xBC = k.call(k.conv, xBC.transpose(1, 2), self.conv1d.weight.squeeze(1),
                         self.conv1d.bias, activation="silu").transpose(1, 2)  # (B, T, conv_dim)
        else:
            xBC_t = xBC.transpose(1, 2)  # (B, conv_dim, T)
            if state is not None:
                xBC_t = torch.cat([state[0].to(xBC_t.dtype), xBC_t], dim=-1)  # carried left context
            else:
                xBC_t = F.pad(xBC_t, (self.d_conv - 1, 0))
            if return_state:
                new_conv_state = xBC_t[..., xBC_t.shape[-1] - (self.d_conv - 1):]  # (B, conv_dim, W-1)
            xBC = causal_conv_silu_reference(xBC_t, self.conv1d.weight, self.conv1d.bias).transpose(1, 2)
        x, Bm, Cm = torch.split(xBC, [self.d_inner, self.ngroups * self.d_state, self.ngroups * self.d_state],
                                dim=-1)
        x = x.reshape(bsz, T, self.nheads, self.headdim)  # (B, T, H, P)
        Bm = Bm.reshape(bsz, T, self.ngroups, self.d_state)  # (B, T, G, N)
        Cm = Cm.reshape(bsz, T, self.ngroups, self.d_state)
        init = state[1] if state is not None else None
        if k.scan is not None:
            out = k.call(k.scan, x, dt, A, Bm, Cm, self.chunk_size, D=_hi(self.D), dt_bias=_hi(self.dt_bias),
                         dt_softplus=True, initial_states=None if init is None else _hi(init),
                         return_final_states=return_state)
            y, final = out if return_state else (out, None)  # y: (B, T, H, P) in x's dtype
        else:
            y, final = ssd_scan_reference(x, dt, A, Bm, Cm, self.D, self.dt_bias, self.chunk_size, init)
        new_state = (new_conv_state, final) if return_state else None
        return y.reshape(bsz, T, self.d_inner), z, new_state
