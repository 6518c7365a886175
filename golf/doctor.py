"""`golf doctor`: which torch/CUDA this is, and which SSM, conv and attention paths a model built from the
given params will run, and why.

The choice itself is made by the model's own resolvers (golf.ssm.resolve_ssm_backend,
golf.attention.resolve_attn_backend), called here exactly as GolfLM calls them; this module only adds the
reasons, from the same import probes those resolvers use.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field

from golf.config import Params
from golf.errors import GolfError


@dataclass
class PathChoice:
    part: str  # "ssm", "conv", "attention"
    path: str  # what will run, or "error"
    why: str


@dataclass
class Diagnosis:
    versions: dict[str, str]
    device: str
    cuda: dict
    paths: list[PathChoice] = field(default_factory=list)
    compile: str = ""

    @property
    def ok(self) -> bool:
        return all(p.path != "error" for p in self.paths)


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _cuda_info() -> dict:
    import torch

    info = {"torch_cuda_build": torch.version.cuda or "none (CPU build)", "available": torch.cuda.is_available(),
            "devices": []}
    if info["available"]:
        for i in range(torch.cuda.device_count()):
            cap = torch.cuda.get_device_capability(i)
            info["devices"].append(f"cuda:{i} {torch.cuda.get_device_name(i)} (sm_{cap[0]}{cap[1]})")
    return info


def _ssm_why(requested: str, on_cuda: bool, label: str) -> str:
    if requested == "reference":
        return "model.ssm_backend is 'reference' (pure PyTorch chunked SSD)"
    if label.startswith(("triton", "fused")):
        return f"model.ssm_backend is {requested!r}, the device is CUDA and mamba-ssm's Triton kernels import"
    if not on_cuda:
        return f"model.ssm_backend is {requested!r} but the device is not CUDA: the pure-PyTorch reference runs"
    if not _installed("mamba_ssm"):
        return "mamba-ssm is not installed (README 'GPU install'): the pure-PyTorch reference runs"
    return "mamba-ssm is installed but its Triton kernels do not import (see the warning above): the reference runs"


def _conv_why(ssm_label: str) -> tuple[str, str]:
    if ssm_label == "fused":
        return "causal_conv1d (inside the fused op)", "model.ssm_backend 'fused' runs conv, scan and norm as one op"
    if ssm_label.startswith("fused+"):  # under ssm_compile opaque: golf's one op
        conv = "golf" if "+golf_conv" in ssm_label else "causal_conv1d"
        return f"{conv} (inside golf::mamba_core)", ("model.ssm_backend 'fused' under ssm_compile 'opaque' runs "
                                                     "conv, scan and norm as golf's one op (golf/mixer_op.py)" + (
                                                         "; model.ssm_conv 'golf': golf's own conv kernels "
                                                         "(golf/conv_kernel.py)" if conv == "golf" else ""))
    if "golf_conv" in ssm_label:
        return "golf", "model.ssm_conv 'golf': golf's own Triton kernels (golf/conv_kernel.py) on the Triton SSM path"
    if "causal_conv1d" in ssm_label:
        return "causal_conv1d", "causal-conv1d imports on a CUDA device with the Triton SSM path"
    if ssm_label.startswith("reference"):
        return "pytorch", "the reference SSM path uses the PyTorch depthwise conv (golf.ssm.causal_conv_silu_reference)"
    if not _installed("causal_conv1d"):
        return "pytorch", "causal-conv1d is not installed (pip install -e '.[gpu]')"
    return "pytorch", "causal-conv1d is installed but does not import (see the warning above)"


def _attn_why(requested: str, on_cuda: bool, path: str) -> str:
    from golf.attention import FA4_MODULE, flash_installed

    if path == "flash4":
        return (f"model.attn_backend is 'flash4', the device is CUDA and {FA4_MODULE} (FlashAttention-4) imports: "
                "golf's custom op golf::flash4_attn (golf/attn_ops.py) calls its kernels")
    if path.startswith("flash"):
        module = "flash_attn_interface (flash-attn 3)" if path == "flash3" else "flash_attn (flash-attn 2)"
        return f"model.attn_backend is {requested!r}, the device is CUDA and {module} imports"
    if requested == "sdpa":
        return "model.attn_backend is 'sdpa' (torch.nn.functional.scaled_dot_product_attention)"
    if not on_cuda:
        return "the device is not CUDA: torch's scaled_dot_product_attention runs"
    if not (flash_installed("flash_attn_interface") or flash_installed("flash_attn")):
        fa4 = " (FlashAttention-4 is, but only model.attn_backend 'flash4' uses it)" \
            if flash_installed(FA4_MODULE) else ""
        return f"flash-attn 3 and 2 are not installed{fa4}: torch's scaled_dot_product_attention runs"
    return "flash-attn is installed but does not import (see the warning above): torch's SDPA runs"


def diagnose(params: Params) -> Diagnosis:
    """What a model built from params.model on params.train.device will run (the resolvers' own answer)."""
    import torch

    from golf.attention import resolve_attn_backend
    from golf.provenance import library_versions
    from golf.runtime import resolve_device
    from golf.ssm import resolve_ssm_backend

    mc = params.model
    versions = {"python": sys.version.split()[0], **library_versions()}
    try:
        device = resolve_device(params.train.device)
    except GolfError as e:
        return Diagnosis(versions, f"error: {e}", _cuda_info(), [PathChoice("device", "error", str(e))])
    on_cuda = device.type == "cuda"
    diag = Diagnosis(versions, str(device), _cuda_info())
    if "M" in mc.layer_pattern:
        try:
            kernels = resolve_ssm_backend(mc.ssm_backend, device, mc.ssm_compile, mc.gated_norm, mc.ssm_scan,
                                          mc.ssm_conv)
            label = kernels.label
            diag.paths.append(PathChoice("ssm", label, _ssm_why(mc.ssm_backend, on_cuda, label)))
            conv, why = _conv_why(label)
            diag.paths.append(PathChoice("conv", conv, why))
        except GolfError as e:
            diag.paths.append(PathChoice("ssm", "error", str(e)))
    else:
        diag.paths.append(PathChoice("ssm", "none", f"model.layer_pattern {mc.layer_pattern!r} has no M layer"))
    if "A" in mc.layer_pattern:
        try:
            path, _ = resolve_attn_backend(mc.attn_backend, device)
            diag.paths.append(PathChoice("attention", path, _attn_why(mc.attn_backend, on_cuda, path)))
        except GolfError as e:
            diag.paths.append(PathChoice("attention", "error", str(e)))
    else:
        diag.paths.append(PathChoice("attention", "none", f"model.layer_pattern {mc.layer_pattern!r} has no A layer"))
    tc = params.train
    if tc.compile and on_cuda:
        diag.compile = f"torch.compile (mode {tc.compile_mode}), SSM kernels: model.ssm_compile {mc.ssm_compile!r}"
    else:
        diag.compile = ("eager: train.compile is false" if not tc.compile
                        else f"eager: torch.compile is used on CUDA only (torch {torch.__version__})")
    return diag


def render(diag: Diagnosis, version_line: str, params_source: str) -> list[str]:
    """Plain lines (no markup) for the terminal and for tests."""
    v = diag.versions
    lines = [version_line,
             f"python {v['python']}, torch {v['torch']} (CUDA build: {diag.cuda['torch_cuda_build']})",
             "CUDA devices: " + (", ".join(diag.cuda["devices"]) if diag.cuda["devices"] else "none visible"),
             "kernels: " + ", ".join(f"{k} {v[k]}" for k in ("triton", "mamba-ssm", "causal-conv1d", "flash-attn")),
             f"params: {params_source}",
             f"device: {diag.device}"]
    for p in diag.paths:
        lines.append(f"{p.part}: {p.path} ({p.why})" if p.path != "error" else f"{p.part}: will FAIL: {p.why}")
    lines.append(f"training graph: {diag.compile}")
    return lines
