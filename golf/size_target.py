"""package.target_bytes: shrink a quantized model to a byte target by zeroing its cheapest ±1 codes.

A quantized code of ±1 in row r, input column c of a GPTQ layer stands for the weight ±s_r (s_r the row's
scale). Setting it to 0 adds the error e = ∓s_r to that weight, and the layer's output error grows by
e² H_cc (the diagonal term of tr(E H Eᵀ), H = XᵀX the calibration Hessian): cost = s_r² · diag(H)_c.
Zeroed codes make the int planes more uniform and the compressed file smaller; the ±1 codes are the ones
whose removal costs least for the bytes it saves (a 0 is what the compressor sees most often).

The cheapest codes are zeroed first; the count is searched, because compression is the only exact size
measure and it is slow (tens of seconds per compression of a 20 MB container). An order-0 entropy model of
the int code planes (CodeEntropy) predicts, for any count, the bytes it saves; calibrated against the real
sizes as they come in, it picks the counts to compress, a few per round in parallel threads (the compressors
release the GIL). The search keeps the smallest measured count that fits and stops once that one is within
a small slack of the target (package: 0.1%), so it zeroes the fewest codes within that slack, in at most
three rounds. The chosen count's compressed bytes are handed to golf.package.build_artifact, which writes
them after its read-back check instead of compressing the model again.

The per-column weights diag(H) come from the quantize stage (`column_weights.safetensors` beside the
quantized model), so packaging needs no Hessians and no model. This module is not part of the artifact's
code (no evaluation module imports it).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
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


class CodeEntropy:
    """Order-0 model of the int code planes: the bytes that zeroing the n cheapest ±1 codes saves.

    Per stored `.q` tensor holding candidates, a histogram of its codes; zeroing moves counts from +1 / -1
    to 0 in the tensors that hold the zeroed codes (how many of each sign, for any n, is a searchsorted on
    the tensor's sorted candidate ranks). The saving is the drop of Σ_tensors numel·H(codes) / 8, an
    estimate only: the search calibrates it to real compressed bytes and never trusts it for the result."""

    def __init__(self, tensors: dict[str, torch.Tensor], cand: Candidates):
        self.n_all = len(cand)
        self.sorted_ranks, self.plus_cum = [], []
        c0, cp, cm = [], [], []
        for qname, (pos, rank) in cand.per_tensor.items():
            q = tensors[qname].reshape(-1)
            order = torch.argsort(rank)
            self.sorted_ranks.append(rank[order].numpy())  # (n_j,) ascending
            plus = (q[pos[order]] == 1).numpy().astype(np.int64)
            self.plus_cum.append(np.concatenate([[0], np.cumsum(plus)]))  # (n_j + 1,)
            c0.append(int((q == 0).sum()))
            cp.append(int((q == 1).sum()))
            cm.append(int((q == -1).sum()))
        self.c0, self.cp, self.cm = (np.array(c, dtype=np.float64) for c in (c0, cp, cm))  # (T,) each
        self._base = self._bits(self.c0, self.cp, self.cm)

    @staticmethod
    def _bits(c0: np.ndarray, cp: np.ndarray, cm: np.ndarray) -> float:
        """-Σ c·log2(c) over the three changing symbols of every tensor (the rest of the entropy is constant)."""
        return float(-sum((c * np.log2(np.maximum(c, 1.0))).sum() for c in (c0, cp, cm)))  # 0·log 0 = 0

    def saved(self, n: int) -> float:
        """Predicted bytes saved by zeroing the n cheapest ±1 codes (order-0 entropy, uncalibrated)."""
        if n <= 0 or not self.sorted_ranks:
            return 0.0
        k = np.array([np.searchsorted(r, n) for r in self.sorted_ranks], dtype=np.float64)  # (T,) hits
        plus = np.array([pc[int(kk)] for pc, kk in zip(self.plus_cum, k)], dtype=np.float64)  # (T,)
        after = self._bits(self.c0 + k, self.cp - plus, self.cm - (k - plus))
        return (self._base - after) / 8

    def n_for(self, saving: float) -> int:
        """The smallest n whose predicted saving reaches `saving` (n_all if none does)."""
        lo, hi = 0, self.n_all
        if self.saved(hi) < saving:
            return hi
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.saved(mid) >= saving:
                hi = mid
            else:
                lo = mid
        return hi if saving > 0 else 0


# Before any measurement, the real bytes saved per predicted byte are guessed 0.8, 1.0 and 1.6: the order-0
# model ignores that the cheapest codes crowd into rows of small scale, which the compressors' adaptive
# coding exploits, so it under-predicts small savings (measured: lzma saved 1.1-2.4x the prediction for
# 5-50% of the candidates of int5 test matrices, about 1.0x for all of them).
RATIO_GUESSES = (0.8, 1.0, 1.6)
SPARE_RATIOS = (3.0, 6.0, 0.5)  # when a guess asks for more than every candidate: counts spread lower


def _unpack(result) -> tuple[int, object]:
    return (int(result[0]), result[1]) if isinstance(result, tuple) else (int(result), None)


def fit_to_target(tensors: dict[str, torch.Tensor], cand: Candidates, target_bytes: int,
                  measure: Callable[[dict[str, torch.Tensor]], int | tuple[int, object]], size_now: int,
                  slack_frac: float = 0.001, per_round: int = 3, max_rounds: int = 3
                  ) -> tuple[dict[str, torch.Tensor], dict, object]:
    """Zero the fewest cheapest ±1 codes, within a slack, so that measure(tensors) <= target_bytes.

    "Fewest within the slack": the search stops at the first count n whose measured size s fits with
    s >= target_bytes - slack (slack = slack_frac · target_bytes bytes), or once it has bracketed the
    smallest fitting count to one code. Where the size falls with the count, this zeroes at most the codes
    worth `slack` bytes more than the true minimum. It measures at most `per_round` counts per round, in
    parallel threads, and at most `max_rounds` rounds that hold a fitting count; when none of them fit, one
    more round measures zeroing every candidate (with per_round - 1 counts below it) and the smallest
    fitting count is kept, which fits but may miss the slack (info["within_slack"] False).

    The counts come from CodeEntropy (the bytes an order-0 model predicts zeroing n codes saves). Round 1
    aims at target - slack/2 under three guesses of the ratio of real to predicted bytes; it includes every
    candidate only when the model says that fewer may not do (then a miss is the ArtifactError at once).
    Later rounds aim inside the window from the measured counts around the target: interpolated in
    predicted-saving space (the model calibrated on them), with count-space interpolation as a hedge, or,
    when nothing fits yet, extrapolated with the ratio measured at the largest count. Every size in info is
    a real measure; info["measured"] has them all.

    measure(tensors) returns the size, or (size, payload): the payload of the chosen count (e.g. its
    compressed bytes) is returned so that the caller need not compute it again. size_now = measure of the
    untouched tensors. Returns (tensors, info, payload or None); ArtifactError if zeroing every candidate is
    not enough."""
    slack = max(0, int(slack_frac * target_bytes))
    info = {"target_bytes": target_bytes, "candidates": len(cand), "size_before": size_now, "zeroed": 0,
            "est_cost": 0.0, "est_cost_rel": 0.0, "slack_bytes": slack, "rounds": 0, "measures": 0,
            "within_slack": True, "measured": {}}
    if size_now <= target_bytes:
        info["size_after"] = size_now
        return tensors, info, None
    n_all = len(cand)
    model = CodeEntropy(tensors, cand)
    saved: dict[int, float] = {}

    def pred(n: int) -> float:
        if n not in saved:
            saved[n] = model.saved(n)
        return saved[n]

    sizes, payloads = {0: size_now}, {}
    center = target_bytes - slack / 2  # aim at the middle of the accepted window [target - slack, target]

    def bracket() -> tuple[int, int | None]:
        fits = [n for n, s in sizes.items() if s <= target_bytes]
        hi = min(fits) if fits else None
        lo = max(n for n, s in sizes.items() if s > target_bytes and (hi is None or n < hi))
        return lo, hi

    def n_at(size: float, lo: int, hi: int | None, by_model: bool = True) -> int:
        """The count whose size the measurements so far predict to be `size`: interpolated between the
        bracket's sizes in predicted-saving space (by_model) or in count space (a hedge against a model of
        the wrong shape); with nothing fitting yet, extrapolated with the ratio measured at `lo`."""
        s_lo = sizes[lo]
        if hi is not None:
            p_lo, p_hi, s_hi = pred(lo), pred(hi), sizes[hi]
            frac = (s_lo - size) / max(s_lo - s_hi, 1)
            if by_model and p_hi > p_lo:
                return model.n_for(p_lo + frac * (p_hi - p_lo))
            return round(lo + frac * (hi - lo))
        p_lo = pred(lo)
        ratio = (size_now - s_lo) / p_lo if lo > 0 and p_lo > 0 and s_lo < size_now else 1.0
        if by_model:
            return model.n_for((size_now - size) / ratio)
        return round(lo / max(size_now - s_lo, 1) * (size_now - size)) if lo > 0 else n_all // 2

    err = float(slack)
    with ThreadPoolExecutor(max_workers=per_round + 1) as pool:
        while True:
            lo, hi = bracket()
            if hi is not None and (sizes[hi] >= target_bytes - slack or hi - lo <= 1 or info["rounds"] >= max_rounds):
                break
            extra = info["rounds"] >= max_rounds  # nothing fit: the last round includes every candidate
            if extra and n_all in sizes:
                break
            # (count, size aimed at) in order of preference; the first per_round distinct new counts are measured
            wanted: list[tuple[int, float]] = [(n_all, float(target_bytes))] if extra else []
            if info["rounds"] == 0:
                ratios = RATIO_GUESSES if per_round == len(RATIO_GUESSES) else \
                    np.geomspace(RATIO_GUESSES[0], RATIO_GUESSES[-1], per_round) if per_round > 1 else (1.0,)
                wanted += [(model.n_for((size_now - center) / r), center) for r in (*ratios, *SPARE_RATIOS)]
            else:
                spread = max(0.35 * slack, err)
                if hi is not None:  # aims strictly inside the bracket's sizes
                    s_lo, s_hi = sizes[lo], sizes[hi]
                    aims = [min(max(center + k * spread, s_hi + 0.1 * (s_lo - s_hi)), s_lo - 0.1 * (s_lo - s_hi))
                            for k in (0, -1, 1)]
                else:
                    aims = [center + k * spread for k in (0, -1, 1)]
                by_model = [(n_at(a, lo, hi), a) for a in aims]
                hedges = [(n_at(a, lo, hi, False), a) for a in aims]
                # the count-space hedge goes second only when it falls outside the model's spread of counts,
                # i.e. when the model's shape is in doubt
                doubt = abs(hedges[0][0] - by_model[0][0]) > abs(by_model[1][0] - by_model[2][0])
                wanted += [by_model[0], hedges[0], *by_model[1:], *hedges[1:]] if doubt else by_model + hedges
            top = hi - 1 if hi is not None else n_all
            points: dict[int, float] = {}
            for p, aim in wanted:
                p = p if p == n_all and hi is None else min(max(p, lo + 1), top)
                if p not in sizes and p not in points and len(points) < per_round:
                    points[p] = aim
            if not points:
                break
            order = sorted(points)
            for p, r in zip(order, pool.map(lambda p: _unpack(measure(zero_cheapest(tensors, cand, p))), order)):
                sizes[p], payloads[p] = r
            info["rounds"] += 1
            info["measures"] += len(order)
            if info["rounds"] > 1:  # how far the calibrated model missed: the next round's spread
                err = min(abs(sizes[p] - points[p]) for p in order)
            lo, hi = bracket()
            for p in list(payloads):  # keep only the payload that can still be the answer
                if p != hi:
                    del payloads[p]
            if hi is None and n_all in sizes:
                break
    lo, hi = bracket()
    if hi is None:
        raise ArtifactError(f"package.target_bytes {target_bytes:,}: zeroing all {n_all:,} quantized ±1 codes still "
                            f"gives {sizes[n_all]:,} bytes; quantize harder (quant.bits_<group>) or raise the target")
    cost = float(cand.costs[:hi].sum())
    info.update(zeroed=hi, size_after=sizes[hi], est_cost=cost, est_cost_rel=cost / max(cand.total_energy, 1e-30),
                within_slack=sizes[hi] >= target_bytes - slack or hi - lo <= 1,
                measured={str(k): v for k, v in sorted(sizes.items())})
    return zero_cheapest(tensors, cand, hi), info, payloads.get(hi)


def shrink_for_package(tensors: dict[str, torch.Tensor], spec: dict, model_config: dict,
                       col_weights: dict[str, torch.Tensor], target_bytes: int, compressor: str, byte_planes: bool,
                       compare: bool = False, slack_frac: float = 0.001, segments: int = 1
                       ) -> tuple[dict[str, torch.Tensor], dict, str, bool, bytes]:
    """The package stage's size targeting: (tensors, info, compressor, byte_planes, compressed model) where
    the compressor and layout are the ones measured (with compressor auto: the smallest on the untouched
    model, kept for the search) and the compressed model is those tensors' container compressed that way
    (for build_artifact's `precompressed`). compare: also compress the untouched model with the other
    compressors, in parallel with the first compression, for info["sizes_before"]. info["secs"]: seconds of
    the compressor sweep and of the search. segments: package.segments, for every compression here."""
    from golf.package import code_files, compress, compress_candidates, serialize

    t0 = time.time()
    code_bytes = sum(f.stat().st_size for f in code_files())
    chosen, results, _, _ = compress_candidates(tensors, spec, model_config, compressor, byte_planes, compare=compare,
                                                segments=segments)
    method, planes = chosen.removesuffix("+planes"), chosen.endswith("+planes")
    t_sweep = time.time() - t0

    def measure(t: dict[str, torch.Tensor]) -> tuple[int, bytes]:
        blob = compress(serialize(t, spec, model_config, planes), method, segments)
        return len(blob) + code_bytes, blob

    cand = find_candidates(tensors, spec, col_weights)
    out, info, blob = fit_to_target(tensors, cand, target_bytes, measure, len(results[chosen]) + code_bytes,
                                    slack_frac=slack_frac)
    info["sizes_before"] = {k: len(v) for k, v in results.items() if v is not None}
    info["secs"] = {"sweep": round(t_sweep, 2), "search": round(time.time() - t0 - t_sweep, 2)}
    return out, info, method, planes, (results[chosen] if blob is None else blob)
