"""package.target_bytes: shrink a quantized model to a byte target by zeroing its cheapest ±1 codes.

A quantized code of ±1 in row r, input column c of a GPTQ layer stands for the weight ±s_r (s_r the row's
scale). Setting it to 0 adds the error e = ∓s_r to that weight, and the layer's output error grows by
e² H_cc (the diagonal term of tr(E H Eᵀ), H = XᵀX the calibration Hessian): cost = s_r² · diag(H)_c.
Zeroed codes make the int planes more uniform and the compressed file smaller; the ±1 codes are the ones
whose removal costs least for the bytes it saves (a 0 is what the compressor sees most often).

The cheapest codes are zeroed first; the count is searched, because compression is the only exact size
measure and it is slow (tens of seconds for a 16 MB LZMA artifact): the size falls almost linearly with the
count, so each round compresses a few counts around the interpolated answer in parallel threads (the
compressors release the GIL) and keeps the bracket [largest count over the target, smallest count under it].
The result is the smallest count found that fits, within `rel_tol` of the true minimum.

The per-column weights diag(H) come from the quantize stage (`column_weights.safetensors` beside the
quantized model), so packaging needs no Hessians and no model. This module is not part of the artifact's
code (golf.package does not import it).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from golf.errors import ArtifactError, GolfError
from golf.io import atomic_path

COLUMN_WEIGHTS_FILE = "column_weights.safetensors"


def column_weights(hessians: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diag(H) per calibrated layer, keyed by the weight's state-dict name (module + ".weight"). (in,) fp32"""
    return {f"{m}.weight": h.diagonal().float().cpu().contiguous() for m, h in hessians.items()}


def save_column_weights(path: str | Path, weights: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(weights, str(tmp))


def load_column_weights(path: str | Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise GolfError(f"package.target_bytes needs {str(path)!r} (diag of the Hessians, written by the quantize "
                        "stage): run the quantize stage again")
    return load_file(str(path))


@dataclass
class Candidates:
    """Every ±1 code of the weighted layers, cheapest first (global rank = position in cost order)."""
    per_tensor: dict[str, tuple[torch.Tensor, torch.Tensor]]  # stored .q name -> (flat positions, ranks), int64
    costs: torch.Tensor  # (N,) float64, ascending
    total_energy: float  # Σ (q·s)² diag(H) over the weighted layers: the scale for a relative cost

    def __len__(self) -> int:
        return int(self.costs.numel())


def find_candidates(tensors: dict[str, torch.Tensor], spec: dict, col_weights: dict[str, torch.Tensor]) -> Candidates:
    names, positions, costs = [], [], []
    energy = 0.0
    for name in sorted(spec):
        s = spec[name]
        if s.get("kind") != "int" or name not in col_weights:
            continue
        q, scale = tensors[name + ".q"], tensors[name + ".scale"].double()  # (out, in), (out,)
        hd = col_weights[name].double().clamp_min(0)  # (in,)
        if hd.shape != q.shape[1:]:
            raise GolfError(f"column weights of {name!r} have shape {tuple(hd.shape)}, expected ({q.shape[1]},)")
        weight = scale[:, None] ** 2 * hd[None, :]  # (out, in): cost of a ±1 code there
        energy += float((q.double() ** 2 * weight).sum())
        pos = torch.nonzero(q.reshape(-1).abs() == 1).squeeze(1)  # (n_j,)
        names.append(name + ".q")
        positions.append(pos)
        costs.append(weight.reshape(-1)[pos])
    if not names:
        return Candidates({}, torch.zeros(0, dtype=torch.float64), 0.0)
    sizes = [p.numel() for p in positions]
    all_costs = torch.cat(costs)
    order = torch.sort(all_costs, stable=True).indices
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(order.numel())
    per = {n: (p, r) for n, p, r in zip(names, positions, torch.split(ranks, sizes))}
    return Candidates(per, all_costs[order], energy)


def zero_cheapest(tensors: dict[str, torch.Tensor], cand: Candidates, n: int) -> dict[str, torch.Tensor]:
    """A copy of `tensors` with the n cheapest ±1 codes set to 0 (untouched tensors shared, not copied)."""
    out = dict(tensors)
    for qname, (pos, rank) in cand.per_tensor.items():
        hit = pos[rank < n]
        if hit.numel():
            q = tensors[qname].clone()
            q.view(-1)[hit] = 0
            out[qname] = q
    return out


def fit_to_target(tensors: dict[str, torch.Tensor], cand: Candidates, target_bytes: int,
                  measure: Callable[[dict[str, torch.Tensor]], int], size_now: int, rel_tol: float = 0.002,
                  per_round: int = 3, max_rounds: int = 10) -> tuple[dict[str, torch.Tensor], dict]:
    """Zero the fewest cheapest ±1 codes so that measure(tensors) <= target_bytes. size_now = measure of the
    untouched tensors. Returns (tensors, info); ArtifactError if zeroing every candidate is not enough."""
    info = {"target_bytes": target_bytes, "candidates": len(cand), "size_before": size_now, "zeroed": 0,
            "est_cost": 0.0, "est_cost_rel": 0.0, "measured": {}}
    if size_now <= target_bytes:
        info["size_after"] = size_now
        return tensors, info
    n_all = len(cand)
    sizes = {0: size_now}
    sizes[n_all] = measure(zero_cheapest(tensors, cand, n_all))
    if sizes[n_all] > target_bytes:
        raise ArtifactError(f"package.target_bytes {target_bytes:,}: zeroing all {n_all:,} quantized ±1 codes still "
                            f"gives {sizes[n_all]:,} bytes; quantize harder (quant.bits_<group>) or raise the target")
    lo, hi = 0, n_all
    tol = max(1, int(rel_tol * n_all))
    with ThreadPoolExecutor(max_workers=per_round) as pool:
        for _ in range(max_rounds):
            if hi - lo <= tol:
                break
            s_lo, s_hi = sizes[lo], sizes[hi]
            guess = lo + (s_lo - target_bytes) / max(s_lo - s_hi, 1) * (hi - lo)  # linear interpolation
            spread = max((hi - lo) / 16, tol)
            points = {round(guess + k * spread) for k in range(-(per_round // 2), per_round - per_round // 2)}
            points = sorted(p for p in {min(max(p, lo + 1), hi - 1) for p in points} if p not in sizes)
            if not points:
                break
            for p, s in zip(points, pool.map(lambda p: measure(zero_cheapest(tensors, cand, p)), points)):
                sizes[p] = s
            fits = [p for p in sizes if sizes[p] <= target_bytes]
            hi = min(fits)
            lo = max([p for p in sizes if sizes[p] > target_bytes and p < hi], default=0)
    info.update(zeroed=hi, size_after=sizes[hi], est_cost=float(cand.costs[:hi].sum()),
                est_cost_rel=float(cand.costs[:hi].sum()) / max(cand.total_energy, 1e-30),
                measured={str(k): v for k, v in sorted(sizes.items())})
    return zero_cheapest(tensors, cand, hi), info


def shrink_for_package(tensors: dict[str, torch.Tensor], spec: dict, model_config: dict,
                       col_weights: dict[str, torch.Tensor], target_bytes: int, compressor: str, byte_planes: bool
                       ) -> tuple[dict[str, torch.Tensor], dict, str, bool]:
    """The package stage's size targeting: (tensors, info, compressor, byte_planes) where the last two are the
    ones measured (with compressor auto: the smallest on the untouched model, kept for the search)."""
    from golf.package import code_files, compress, compress_candidates, serialize

    code_bytes = sum(f.stat().st_size for f in code_files())
    chosen, results, _, _ = compress_candidates(tensors, spec, model_config, compressor, byte_planes, compare=False)
    method, planes = chosen.removesuffix("+planes"), chosen.endswith("+planes")

    def measure(t: dict[str, torch.Tensor]) -> int:
        return len(compress(serialize(t, spec, model_config, planes), method)) + code_bytes

    cand = find_candidates(tensors, spec, col_weights)
    out, info = fit_to_target(tensors, cand, target_bytes, measure, len(results[chosen]) + code_bytes)
    info["sizes_before"] = {k: len(v) for k, v in results.items() if v is not None}
    return out, info, method, planes
