"""golf's host code for two of mamba-ssm's SSD backward kernels: the states' parts of B's and C's gradients
(`_chunk_state_bwd_db_kernel`, `_chunk_scan_bwd_dc_kernel`, mamba-ssm 2.3.2.post1), launched as mamba-ssm's own
`_chunk_state_bwd_db` and `_chunk_scan_bwd_dC` launch them, with one difference: where the kernels run as a single
split of heads (nsplits 1, as at hybrid_12_b131k's shapes on an H200: 12 heads per program), the (batch, seqlen,
nsplits, ngroups, dstate) output is returned as a view of its one split instead of summed over it. mamba-ssm's
`dB.sum(2)` and `dC.sum(2)` over that size-1 dimension are each a full copy of the gradient (16 MB read, 16 written;
16 and 15 us a layer in the step's profile, bench/RESULTS.md 2026-12-02 nineteenth block). The values are the same
bits (a sum of one term is that term).

Anything else (mamba-ssm's deterministic mode, seq_idx, no B or C given) goes to mamba-ssm's functions unchanged.
golf.mixer_op.ssd_parts binds these in their place for scan_impl "mamba_keep" and its variants.
"""

from __future__ import annotations

import math

import torch
import triton


def state_part_functions(chunk_state_module, chunk_scan_module) -> dict:
    """{"_chunk_state_bwd_db": ..., "_chunk_scan_bwd_dC": ...}: golf's host code over the kernels of mamba-ssm's
    ssd_chunk_state and ssd_chunk_scan modules (module docstring), with those modules' own functions as fallbacks.
    AttributeError where a module lacks what this code launches."""
    db_kernel, db_ref = chunk_state_module._chunk_state_bwd_db_kernel, chunk_state_module._chunk_state_bwd_db
    dc_kernel, dc_ref = chunk_scan_module._chunk_scan_bwd_dc_kernel, chunk_scan_module._chunk_scan_bwd_dC
    deterministic_db = chunk_state_module.use_deterministic_mode
    deterministic_dc = chunk_scan_module.use_deterministic_mode

    def chunk_state_bwd_db(x, dt, dA_cumsum, dstates, seq_idx=None, B=None, ngroups=1):
        """mamba-ssm's _chunk_state_bwd_db(x, dt, dA_cumsum, dstates, seq_idx, B, ngroups) → (dB, ddA_cumsum)."""
        if seq_idx is not None or B is None or deterministic_db():
            return db_ref(x, dt, dA_cumsum, dstates, seq_idx=seq_idx, B=B, ngroups=ngroups)
        batch, seqlen, nheads, headdim = x.shape
        _, _, nchunks, chunk_size = dt.shape
        dstate = dstates.shape[-1]
        dB, ddA, per_program, grid = _outputs(x.device, batch, seqlen, nheads, nchunks, chunk_size, ngroups, dstate)
        with torch.cuda.device(x.device.index):
            db_kernel[grid](
                x, dstates, B, dt, dA_cumsum, None, dB, ddA,
                chunk_size, dstate, headdim, batch, seqlen, nheads, per_program, ngroups,
                *x.stride(), *dstates.stride(), *B.stride(),
                dt.stride(0), dt.stride(2), dt.stride(1), dt.stride(3),
                dA_cumsum.stride(0), dA_cumsum.stride(2), dA_cumsum.stride(1), dA_cumsum.stride(3),
                0, 0, *dB.stride(), ddA.stride(0), ddA.stride(2), ddA.stride(1), ddA.stride(3), 0,
                HAS_DDA_CS=True, HAS_SEQ_IDX=False, DETERMINISTIC_REDUCTION=False,
                BLOCK_SIZE_K=max(triton.next_power_of_2(headdim), 16))
        torch.cumsum(ddA, dim=-1, out=ddA)  # as mamba-ssm: the chunk-state part of the log-decay gradient
        return _one_split(dB), ddA

    def chunk_scan_bwd_dC(prev_states, dA_cumsum, dout, seq_idx=None, C=None, ngroups=1):
        """mamba-ssm's _chunk_scan_bwd_dC(prev_states, dA_cumsum, dout, seq_idx, C, ngroups) → (dC, ddA_prev)."""
        if seq_idx is not None or C is None or deterministic_dc():
            return dc_ref(prev_states, dA_cumsum, dout, seq_idx=seq_idx, C=C, ngroups=ngroups)
        batch, nchunks, nheads, headdim, dstate = prev_states.shape
        seqlen, chunk_size = dout.shape[1], dA_cumsum.shape[-1]
        dC, ddA, per_program, grid = _outputs(dout.device, batch, seqlen, nheads, nchunks, chunk_size, ngroups,
                                              dstate)
        with torch.cuda.device(dout.device.index):
            dc_kernel[grid](
                dout, prev_states, C, dA_cumsum, None, dC, ddA,
                chunk_size, dstate, headdim, batch, seqlen, nheads, per_program, ngroups,
                *dout.stride(), *prev_states.stride(), *C.stride(),
                dA_cumsum.stride(0), dA_cumsum.stride(2), dA_cumsum.stride(1), dA_cumsum.stride(3),
                0, 0, *dC.stride(), ddA.stride(0), ddA.stride(2), ddA.stride(1), ddA.stride(3), 0,
                HAS_DDA_CS=True, HAS_SEQ_IDX=False, DETERMINISTIC_REDUCTION=False,
                BLOCK_SIZE_K=max(triton.next_power_of_2(headdim), 16))
        return _one_split(dC), ddA

    return {"_chunk_state_bwd_db": chunk_state_bwd_db, "_chunk_scan_bwd_dC": chunk_scan_bwd_dC}


def _outputs(device: torch.device, batch: int, seqlen: int, nheads: int, nchunks: int, chunk_size: int, ngroups: int,
             dstate: int):
    """What both kernels write and how they are launched → (the B or C gradient per split, (batch, seqlen, nsplits,
    ngroups, dstate) fp32; the log-decay gradient part (batch, nheads, nchunks, chunk_size) fp32, which each kernel
    adds its dstate tiles' shares into atomically after its autotune pre-hook zeroes it; heads per program; the
    launch grid)."""
    nsplits, per_program = _splits(device, batch, nchunks, nheads, ngroups)
    grad = torch.empty(batch, seqlen, nsplits, ngroups, dstate, dtype=torch.float32, device=device)
    ddA = torch.empty(batch, nheads, nchunks, chunk_size, dtype=torch.float32, device=device)
    return grad, ddA, per_program, _grid(chunk_size, dstate, batch * nchunks, nsplits * ngroups)


def _splits(device: torch.device, batch: int, nchunks: int, nheads: int, ngroups: int) -> tuple[int, int]:
    """(nsplits, heads per program) as mamba-ssm picks them: enough programs to fill the device's SMs, at most a
    group's heads per program."""
    ratio = nheads // ngroups
    sm_count = torch.cuda.get_device_properties(device).multi_processor_count
    per_program = max(min(math.ceil(batch * nchunks * nheads / sm_count), ratio), 1)
    return triton.cdiv(ratio, per_program), per_program


def _grid(chunk_size: int, dstate: int, batch_chunks: int, split_groups: int):
    """The kernels' launch grid for their autotuned block sizes, as mamba-ssm's: (row and dstate tiles, batch x
    chunks, splits x groups)."""
    def grid(meta):
        return (triton.cdiv(chunk_size, meta["BLOCK_SIZE_M"]) * triton.cdiv(dstate, meta["BLOCK_SIZE_N"]),
                batch_chunks, split_groups)
    return grid


def _one_split(d: torch.Tensor) -> torch.Tensor:
    """(batch, seqlen, nsplits, ngroups, dstate) → (batch, seqlen, ngroups, dstate): the view of the one split, or
    the sum over several (as mamba-ssm)."""
    return d[:, :, 0] if d.shape[2] == 1 else d.sum(2)
