"""Mamba-2 mixer: a pure-PyTorch reference path (chunked SSD, runs anywhere) and a CUDA fast path
(mamba-ssm's Triton SSD kernel). Both compute the same function; tests/test_ssm.py checks the reference
against a naive step-by-step recurrence, and bench/parity_gpu.py checks fast against reference on GPU.

The SSD recurrence per head h (Dao & Gu, "Transformers are SSMs", 2024, section 6):
    state_t = exp(dt_t * A_h) * state_{t-1} + dt_t * x_t ⊗ B_t        state: (headdim, d_state)
    y_t     = state_t · C_t + D_h * x_t
with A_h = -exp(A_log_h) and dt_t = softplus(dt_raw_t + dt_bias_h).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import math
import sys
import types

import torch
import torch.nn as nn
import torch.nn.functional as F

from golf.errors import GolfError

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# Reference SSD (chunked, pure PyTorch)
# --------------------------------------------------------------------------------------------------


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


def ssd_naive(x, dt, A, B, C, initial_state=None):
    """Step-by-step recurrence (slow; for tests). Shapes as in ssd_reference."""
    b, l, h, p = x.shape
    g = B.shape[2]
    B = B.repeat_interleave(h // g, dim=2)
    C = C.repeat_interleave(h // g, dim=2)
    state = initial_state if initial_state is not None else x.new_zeros(b, h, p, B.shape[-1])
    ys = []
    for t in range(l):
        da = torch.exp(dt[:, t] * A)  # (b, h)
        state = state * da[..., None, None] + torch.einsum("bhp,bhn->bhpn", x[:, t] * dt[:, t, :, None], B[:, t])
        ys.append(torch.einsum("bhpn,bhn->bhp", state, C[:, t]))
    return torch.stack(ys, dim=1), state


# --------------------------------------------------------------------------------------------------
# Fast path: mamba-ssm's Triton SSD kernel
# --------------------------------------------------------------------------------------------------


def _import_triton_ssd():
    """mamba_chunk_scan_combined from mamba-ssm, or None.

    mamba-ssm releases up to 2.3.2.post1 cannot be imported without their CUDA extension: the package
    __init__ imports ops/selective_scan_interface.py, which does an unguarded `import selective_scan_cuda`
    (the Mamba-1 kernel, which we never use). The Triton SSD kernels themselves need no extension. So when
    the normal import fails for exactly that reason, we register a bare package object for `mamba_ssm`
    (same __path__, __init__ not executed) and import only the Triton submodule we need.
    """
    if importlib.util.find_spec("mamba_ssm") is None or not torch.cuda.is_available():
        return None
    try:
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
        return mamba_chunk_scan_combined
    except ImportError as e:
        if "selective_scan_cuda" not in str(e):
            log.warning("mamba-ssm found but its Triton SSD kernel failed to import: %s", e)
            return None
    for name in [m for m in sys.modules if m == "mamba_ssm" or m.startswith("mamba_ssm.")]:
        del sys.modules[name]  # drop the half-initialized package left by the failed import
    spec = importlib.util.find_spec("mamba_ssm")
    pkg = types.ModuleType("mamba_ssm")
    pkg.__path__ = list(spec.submodule_search_locations)
    pkg.__spec__ = spec
    sys.modules["mamba_ssm"] = pkg
    try:
        mod = importlib.import_module("mamba_ssm.ops.triton.ssd_combined")
        return mod.mamba_chunk_scan_combined
    except ImportError as e:
        log.warning("mamba-ssm Triton SSD kernel unavailable: %s", e)
        return None


def resolve_ssm_backend(requested: str, device: torch.device | str) -> tuple[str, object]:
    """Decide the SSM path once, at model build: ("triton", fn) or ("reference", None)."""
    on_cuda = torch.device(device).type == "cuda"
    fn = _import_triton_ssd() if (on_cuda and requested in ("auto", "triton")) else None
    if requested == "triton" and fn is None:
        raise GolfError("model.ssm_backend is 'triton' but mamba-ssm's Triton SSD kernel is not usable here "
                        "(needs CUDA and `pip install mamba-ssm`); use 'auto' or 'reference'")
    return ("triton", fn) if fn is not None else ("reference", None)


# --------------------------------------------------------------------------------------------------
# The mixer
# --------------------------------------------------------------------------------------------------


class Mamba2Mixer(nn.Module):
    """in_proj → [z, xBC, dt]; causal depthwise conv + SiLU on xBC; SSD scan; gated RMSNorm; out_proj.

    The dynamics parameters (A_log, dt_bias, D, conv1d) are kept out of every quantization step and stay
    in fp32: training runs under autocast with fp32 master weights, so nothing casts them down.
    """

    def __init__(self, d_model: int, d_state: int, d_conv: int, expand: float, headdim: int, ngroups: int,
                 chunk_size: int, linear_cls=nn.Linear, backend: str = "reference", ssd_fn=None):
        super().__init__()
        self.d_inner = int(expand * d_model)
        self.d_state, self.d_conv, self.headdim, self.ngroups = d_state, d_conv, headdim, ngroups
        self.nheads = self.d_inner // headdim
        self.chunk_size = chunk_size
        self.conv_dim = self.d_inner + 2 * ngroups * d_state
        self.in_proj = linear_cls(d_model, 2 * self.d_inner + 2 * ngroups * d_state + self.nheads, bias=False)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, d_conv, groups=self.conv_dim, bias=True)
        # A in [-16, -1], dt in [1e-3, 1e-1] log-uniform: the Mamba-2 reference defaults (mamba_ssm Mamba2:
        # A_init_range=(1, 16), dt_min=0.001, dt_max=0.1); dt_bias is softplus⁻¹ of that dt.
        self.A_log = nn.Parameter(torch.log(torch.empty(self.nheads).uniform_(1.0, 16.0)))
        dt = torch.exp(torch.rand(self.nheads) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        self.D = nn.Parameter(torch.ones(self.nheads))
        self.norm_weight = nn.Parameter(torch.ones(self.d_inner))
        self.out_proj = linear_cls(self.d_inner, d_model, bias=False)
        self.backend, self._ssd_fn = backend, ssd_fn

    def forward(self, u: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None,
                return_state: bool = False):
        """u: (B, T, d_model). state: (conv_state (B, conv_dim, d_conv-1), ssm_state (B, H, P, N))."""
        bsz, T, _ = u.shape
        zxbcdt = self.in_proj(u)  # (B, T, 2*d_inner + 2*G*N + H)
        z, xBC, dt = torch.split(zxbcdt, [self.d_inner, self.conv_dim, self.nheads], dim=-1)
        xBC_t = xBC.transpose(1, 2)  # (B, conv_dim, T)
        if state is not None:
            xBC_t = torch.cat([state[0].to(xBC_t.dtype), xBC_t], dim=-1)  # carried left context
        else:
            xBC_t = F.pad(xBC_t, (self.d_conv - 1, 0))
        new_conv_state = xBC_t[..., -(self.d_conv - 1):] if return_state else None
        xBC = F.silu(F.conv1d(xBC_t, self.conv1d.weight.to(xBC_t.dtype), self.conv1d.bias.to(xBC_t.dtype),
                              groups=self.conv_dim)).transpose(1, 2)  # (B, T, conv_dim)
        x, Bm, Cm = torch.split(xBC, [self.d_inner, self.ngroups * self.d_state, self.ngroups * self.d_state],
                                dim=-1)
        x = x.reshape(bsz, T, self.nheads, self.headdim)  # (B, T, H, P)
        Bm = Bm.reshape(bsz, T, self.ngroups, self.d_state)  # (B, T, G, N)
        Cm = Cm.reshape(bsz, T, self.ngroups, self.d_state)
        A = -torch.exp(self.A_log.float())  # (H,)
        init = state[1] if state is not None else None
        if self.backend == "triton":
            if not u.is_cuda:
                raise GolfError("this model was built with the Triton SSM path but got a CPU tensor; "
                                "rebuild it with model.ssm_backend=reference to run on CPU")
            out = self._ssd_fn(x, dt, A, Bm, Cm, self.chunk_size, D=self.D.float(), dt_bias=self.dt_bias.float(),
                               dt_softplus=True, initial_states=init, return_final_states=return_state)
            y, final = (out if return_state else (out, None))
        else:
            ct = torch.promote_types(x.dtype, torch.float32)  # fp32 scan for bf16 inputs, fp64 stays fp64
            dt_s = F.softplus(dt.to(ct) + self.dt_bias.to(ct))  # (B, T, H)
            y, final = ssd_reference(x.to(ct), dt_s, A.to(ct), Bm.to(ct), Cm.to(ct), self.chunk_size,
                                     None if init is None else init.to(ct))
            y = (y + x.to(ct) * self.D.to(ct)[:, None]).to(x.dtype)
        y = y.reshape(bsz, T, self.d_inner)
        # gated RMSNorm: normalize y * silu(z) (Mamba-2's norm_before_gate=False), learned gain
        y = y * F.silu(z)
        y = F.rms_norm(y.to(torch.promote_types(y.dtype, torch.float32)), (self.d_inner,)).to(y.dtype) \
            * self.norm_weight.to(y.dtype)
        out = self.out_proj(y)  # (B, T, d_model)
        if return_state:
            return out, (new_conv_state, final)
        return out
