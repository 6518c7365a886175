"""Shared fixtures: a tiny corpus, a tiny prepared data folder and tiny params (CPU, seconds)."""

from __future__ import annotations

import functools
import importlib
import json
import lzma
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# Triton kernels (golf/ssd_kernel.py, tests/test_ssd_kernel.py) can run on a machine without CUDA only in
# Triton's interpreter, and triton.jit picks interpreted or compiled when a kernel is defined, for triton's own
# helper kernels too (defined when triton is first imported, which importing golf.ssm does through torch, during
# collection). So the switch has to be set here, before any test module is imported; it changes nothing else on
# such a machine (nothing else runs a Triton kernel there). With CUDA the kernels compile and run on the GPU.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from golf.artifact import MODEL_FILES, open_artifact
from golf.config import LaunchConfig, load_params
from golf.launch import torchrun_command

REPO = Path(__file__).resolve().parents[1]


def triton_kernels(module: str, what: str):
    """golf.<module> (one of golf's own Triton kernel files), its kernels interpreted on the CPU
    (TRITON_INTERPRET=1 above, where there is no CUDA) or compiled for a CUDA device; a skip naming what is missing
    where they can run neither way."""
    pytest.importorskip("triton", reason=f"triton is not installed: golf's {what} kernels (golf/{module}.py) need it")
    mod = importlib.import_module(f"golf.{module}")
    if not mod.interpreted() and not torch.cuda.is_available():
        pytest.skip("no CUDA device and TRITON_INTERPRET is not 1: Triton's kernels cannot run here")
    return mod


# A small hybrid (2 Mamba + 2 attention blocks with U-Net skips, the PyTorch reference SSM) for the model-level
# parity tests of a training path against its PyTorch twin (test_model_block_norm, test_model_qk_rope, test_lm_loss,
# test_embed_grad); each test overrides what it varies.
TINY_HYBRID = {"vocab_size": 300, "d_model": 32, "layer_pattern": "MAMA", "d_state": 8, "expand": 2.0, "headdim": 16,
               "chunk_size": 8, "num_heads": 2, "num_kv_heads": 1, "mlp_mult": 2.0, "bigram_buckets": 64,
               "bigram_dim": 8, "ssm_backend": "reference"}


def assert_close_scaled(name: str, got: torch.Tensor, want: torch.Tensor, tol: float) -> None:
    """Same shape, finite, and max |got - want| within tol times the largest |want| (in fp64, on the CPU): the
    kernel tests' scale-free bound."""
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    assert torch.isfinite(got).all(), f"{name}: non-finite values"
    scale = want.abs().max().item()
    err = (got.cpu().double() - want.cpu().double()).abs().max().item()
    assert err <= tol * max(scale, 1e-30), f"{name}: max |err| {err:.3e} > {tol:g} x max |want| {scale:.3e}"


def loss_and_grads(model, ids: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """A model's training loss on (ids, targets) and every parameter's gradient after its backward, by the module's
    own parameter names (a compiled model's _orig_mod. prefix dropped)."""
    model.zero_grad(set_to_none=True)
    loss = model(ids, targets=targets)
    loss.backward()
    module = getattr(model, "_orig_mod", model)
    return loss.detach(), {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def assert_same_loss_and_grads(ref_loss, ref_grads: dict, loss, grads: dict, tol: float) -> None:
    """loss_and_grads' results of two models agree: the loss within tol, each gradient within tol times its
    largest magnitude, the same parameters having gradients."""
    torch.testing.assert_close(loss, ref_loss, rtol=tol, atol=tol)
    assert grads.keys() == ref_grads.keys()
    for name, g in ref_grads.items():
        scale = g.abs().max().item()
        err = (grads[name] - g).abs().max().item()
        assert err <= tol * max(scale, 1e-6), f"{name}: max |err| {err:.3e} against max |grad| {scale:.3e}"


def bench_script(name: str):
    """bench/<name>.py imported as a module (the bench scripts are not a package), registered in sys.modules so
    that its dataclasses and pickles resolve."""
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def sk():
    """golf.ssd_kernel (golf's own SSD kernels; tests/test_ssd_kernel.py, tests/test_ssm_golf_scan.py)."""
    return triton_kernels("ssd_kernel", "scan")


@pytest.fixture(scope="module")
def ck():
    """golf.conv_kernel (golf's own conv kernels; tests/test_conv_kernel.py, tests/test_ssm_golf_conv.py)."""
    return triton_kernels("conv_kernel", "conv")


@pytest.fixture(scope="module")
def gk():
    """golf.gated_norm_kernel (golf's own gated-norm kernels; tests/test_gated_norm_kernel.py)."""
    return triton_kernels("gated_norm_kernel", "gated-norm")


@pytest.fixture(scope="module")
def bk():
    """golf.block_norm_kernel (golf's own residual-glue kernels; tests/test_block_norm_kernel.py)."""
    return triton_kernels("block_norm_kernel", "block-norm")


@pytest.fixture(scope="module")
def qk():
    """golf.qk_rope_kernel (golf's own query/key norm + RoPE kernels; tests/test_qk_rope_kernel.py)."""
    return triton_kernels("qk_rope_kernel", "query/key norm + RoPE")


@pytest.fixture(scope="module")
def dk():
    """golf.ssd_dcb_kernel (golf's chunk-backward kernel for the SSD scan; tests/test_ssd_dcb_kernel.py)."""
    return triton_kernels("ssd_dcb_kernel", "chunk-backward")


@pytest.fixture(scope="module")
def xk():
    """golf.ssd_xy_kernel (golf's chunk-output and input-gradient kernels for the SSD scan;
    tests/test_ssd_xy_kernel.py)."""
    return triton_kernels("ssd_xy_kernel", "chunk y and dx")


@pytest.fixture(scope="module")
def rk():
    """golf.sum_kernel (the column sums that finish golf's backward kernels' parameter gradients;
    tests/test_sum_kernel.py)."""
    return triton_kernels("sum_kernel", "column-sum")


@pytest.fixture(scope="module")
def device(sk):
    """Where golf's SSD kernels run, and so the tensors of the tests that call them: the CPU in the interpreter,
    else the GPU."""
    return "cpu" if sk.interpreted() else "cuda"

# One intra-op thread per process: the tests' tensors are tiny, so a second thread buys no speed, and on a
# shared 2-core machine its spin-waiting made the suite 3-4x slower (tests/test_ttt.py: 270 s -> 84 s wall
# under load). Subprocesses (the CLI, torchrun ranks) inherit it through the environment.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
DEMO = REPO / "golf" / "demo_data" / "wiki_demo.jsonl.xz"
MODEL_FILE = MODEL_FILES["lzma"]  # the model file of an artifact packed with the default compressor


def load_artifact(path: Path):
    """(model config, stored quantized tensors, spec) of an artifact folder or its model file."""
    art = open_artifact(path)
    return art.config, art.tensors, art.spec


def demo_docs(n: int) -> list[str]:
    out = []
    with lzma.open(DEMO, "rt", encoding="utf-8") as f:
        for line in f:
            out.append(json.loads(line)["text"][:6000])
            if len(out) >= n:
                break
    return out


def write_jsonl(path: Path, docs: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    return path


def tiny_overrides(root: Path, corpus: Path) -> list[str]:
    return [
        "data.name=tiny", f"data.train_globs=[{corpus}]", "data.val_fraction=0.1", "data.vocab_size=512",
        "model.vocab_size=512", "model.d_model=32", "model.layer_pattern=MAM", "model.d_state=8",
        "model.expand=2.0", "model.headdim=16", "model.chunk_size=8", "model.num_heads=2", "model.num_kv_heads=1",
        "model.mlp_mult=2.0", "model.bigram_buckets=64", "model.bigram_dim=8",
        "train.seq_len=32", "train.batch_tokens=256", "train.micro_batch_seqs=8", "train.max_steps=6",
        "train.wallclock_s=0", "train.warmup_steps=2", "train.val_tokens=2048", "train.checkpoint_every=2",
        "train.log_every=1", "train.device=cpu",
        "calib.num_sequences=8", "calib.seq_len=32", "calib.batch_seqs=4", "quant.float_max_numel=256",
        "eval.seq_len=32", "eval.stride=8", "eval.batch_seqs=16", "eval.max_tokens=2048", "eval.device=cpu",
        "ttt.chunk_tokens=512", "ttt.seq_len=32", "ttt.batch_seqs=4", "ttt.max_tokens=2048", "ttt.device=cpu",
        f"runs_dir={root / 'runs'}", "seeds=[1, 2]",
    ]


@pytest.fixture(scope="session")
def tiny_env(tmp_path_factory):
    """A prepared tiny data folder under a temp cwd and the matching Params."""
    root = tmp_path_factory.mktemp("tiny")
    corpus = write_jsonl(root / "corpus.jsonl", demo_docs(40))
    old = os.getcwd()
    os.chdir(root)
    try:
        params = load_params(REPO / "params.yaml", tiny_overrides(root, corpus))
        from stages import prepare

        prepare.run(params)
    finally:
        os.chdir(old)
    return root, params, tiny_overrides(root, corpus)


@pytest.fixture
def in_tiny(tiny_env, monkeypatch):
    root, params, overrides = tiny_env
    monkeypatch.chdir(root)
    return root, params, overrides


def tiny_run_params(root: Path, overrides: list[str], name: str):
    """Tiny params whose runs go to root/<name>/ (one folder per training variant in a test)."""
    return load_params(REPO / "params.yaml", overrides + [f"runs_dir={root / name}"])


def train_tiny(root: Path, overrides: list[str], seed: int, name: str, **kw):
    """Train one seed of the tiny config in-process; returns (metrics, run_dir)."""
    from golf.train import train

    p = tiny_run_params(root, overrides, name)
    rd = p.run_dir(seed)
    return train(p, seed, rd / "train", rd / "ckpt", rd / "plots" / "train_curve.tsv", **kw), rd


GLOO_PROBE = """
import socket, sys, torch, torch.distributed as dist
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
t = torch.ones(3)
dist.all_reduce(t)
dist.destroy_process_group()
sys.exit(0 if t.tolist() == [1.0, 1.0, 1.0] else 1)
"""


@functools.cache
def gloo_unavailable() -> str | None:
    """Why this machine cannot run a gloo process group (probed once: a one-rank group on a free local port
    runs an all-reduce), or None when it can. Two-process tests skip only for this reason; any other failure
    of theirs is a failure."""
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        return "this torch build has no torch.distributed gloo backend"
    r = subprocess.run([sys.executable, "-c", GLOO_PROBE], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, OMP_NUM_THREADS="1"), check=False)
    return None if r.returncode == 0 else f"a one-rank gloo process group fails here: {r.stderr[-300:]}"


def skip_without_gloo() -> None:
    why = gloo_unavailable()
    if why is not None:
        pytest.skip(why)


def run_two_rank_script(tmp_path: Path, name: str, body: str, expected_output: Path, timeout: int) -> None:
    """Write `body` to tmp_path/name and run it on 2 CPU processes under torchrun (gloo, cwd tmp_path).
    Skips only where gloo_unavailable() says this machine has no working gloo process group; any failure
    of the script fails the test with the workers' stderr."""
    skip_without_gloo()
    script = tmp_path / name
    script.write_text(body)
    r = subprocess.run(torchrun_command(LaunchConfig(nproc_per_node=2), script, []), capture_output=True,
                       text=True, timeout=timeout, cwd=tmp_path, env=dict(os.environ, OMP_NUM_THREADS="1"),
                       check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    assert expected_output.exists(), f"{name} exited 0 without writing {expected_output.name}"
