"""Run a stage on several processes: the CLI relaunches itself under torchrun when params ask for it.

`python cli.py train --seed 1` with `launch.nproc_per_node: 4` in params.yaml becomes

    python -m torch.distributed.run --standalone --nproc_per_node=4 cli.py train --seed 1

(the same arguments, so --params/--set reach every rank). Each rank then finds torchrun's environment
(RANK, WORLD_SIZE, LOCAL_RANK) and the stage initializes its process group from it
(golf.runtime.init_distributed: NCCL on GPUs, gloo on CPU). With `launch.nnodes` > 1 every node runs the
same command; torchrun's c10d rendezvous at `launch.rdzv_endpoint` assigns ranks. Because the launch comes from params, DVC stage commands
stay `python cli.py <stage> --seed N` and a change of GPU count reruns the stages it affects.

NCCL's NVLink multicast (NVLS) is turned off unless the caller set it: on the lent multi-GPU H200 machines it
must stay off (the device tool's KINDS.md), and it brings nothing at this model size.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from golf.config import LaunchConfig

CLI = Path(__file__).resolve().parents[1] / "cli.py"  # the project's command line, run in new processes

DISTRIBUTED_STAGES = ("train", "hessian", "eval_sliding", "eval_ttt")
MULTICAST_OFF = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
                 "NVSHMEM_DISABLE_NVLS": "1"}


def stage_cli_args(command: str, seed: int, params_path: str | Path, overrides: list[str]) -> list[str]:
    """`cli.py` arguments that rerun one per-seed stage command with the same params file and overrides."""
    args = [command, "--seed", str(seed), "--params", str(params_path)]
    for ov in overrides:
        args += ["--set", ov]
    return args


def run_cli_stage(name: str, seed: int, params_path: str | Path, overrides: list[str]) -> None:
    """One per-seed stage as `python cli.py <stage>` in a new process, which relaunches itself under torchrun
    per params.launch (how the in-process pipeline and `golf compare` run a multi-process stage)."""
    from golf.errors import GolfError

    cmd = [sys.executable, str(CLI), *stage_cli_args(name.replace("_", "-"), seed, params_path, overrides)]
    proc = subprocess.run(cmd, check=False)
    if proc.returncode != 0:
        raise GolfError(f"stage {name} (seed {seed}) failed with exit code {proc.returncode} (output above)")


def under_torchrun() -> bool:
    """True inside a process that torchrun started (it always sets LOCAL_RANK and TORCHELASTIC_RUN_ID)."""
    return "LOCAL_RANK" in os.environ or "TORCHELASTIC_RUN_ID" in os.environ


def is_main_process() -> bool:
    """Rank 0 of a torchrun launch, or a plain single process (the one that writes outputs and reports)."""
    from golf.runtime import env_dist_info  # torch only when asked: the launching process does not need it

    return env_dist_info().is_main


def torchrun_command(cfg: LaunchConfig, script: str | Path, args: list[str]) -> list[str]:
    """The torchrun command line that runs `script args` on cfg.world_size processes."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={cfg.nproc_per_node}"]
    if cfg.nnodes == 1:
        cmd.append("--standalone")  # a local rendezvous on a free port
    else:
        cmd += [f"--nnodes={cfg.nnodes}", "--rdzv_backend=c10d", f"--rdzv_endpoint={cfg.rdzv_endpoint}",
                f"--rdzv_id={cfg.rdzv_id}"]
    return [*cmd, str(script), *args]


def launch_env() -> dict[str, str]:
    """This process's environment with NVLink multicast off (where the caller did not decide otherwise)."""
    env = dict(os.environ)
    for key, value in MULTICAST_OFF.items():
        env.setdefault(key, value)
    return env


def relaunch_under_torchrun(cfg: LaunchConfig, script: str | Path, args: list[str]) -> int | None:
    """Run `script args` under torchrun and return its exit code, or None when this process should run the
    stage itself (a single-process launch, or already a torchrun worker)."""
    if cfg.world_size <= 1 or under_torchrun():
        return None
    return subprocess.run(torchrun_command(cfg, script, args), env=launch_env(), check=False).returncode
