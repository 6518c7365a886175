"""PNG plots for the report: training curves, BPB by stage and seed, artifact size by tensor group.

Each function draws on its own `matplotlib.figure.Figure` with the Agg canvas created inside the call: no
pyplot global state, no backend switch at import time, nothing left open. Files are written atomically.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from golf.io import atomic_path

_DPI = 120


def _figure(width: float, height: float, ncols: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols)
    return fig, axes


def _save(fig, out: Path) -> None:
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=_DPI)


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def training_curves(curves: Mapping[int, Mapping[str, Sequence[float]]], final_bpb: Mapping[int, float],
                    out: Path) -> None:
    """Train loss by step, one line per seed (in the given order): the whole run (left) and its second half
    with the y axis fitted to it (right), where seeds differ by hundredths of a nat and the start would
    otherwise flatten them. curves[seed] holds train_curve.tsv's columns ("step", "train_loss", ...); the
    legend shows each seed's pre-quant val BPB from final_bpb."""
    fig, (ax_all, ax_end) = _figure(11, 4.2, ncols=2)
    drawn, tail_lo, tail_hi = 0, math.inf, -math.inf
    for seed, c in curves.items():
        steps, loss = list(c.get("step") or []), list(c.get("train_loss") or [])
        if not steps:
            continue
        bpb = final_bpb.get(seed, float("nan"))
        label = f"seed {seed}" + (f" (pre-quant {bpb:.4f} BPB)" if _finite(bpb) else "")
        line, = ax_all.plot(steps, loss, lw=1.2, label=label)
        half = steps[-1] / 2
        tail = [(x, y) for x, y in zip(steps, loss) if x >= half and _finite(y)]
        if tail:
            ax_end.plot([x for x, _ in tail], [y for _, y in tail], lw=1.2, color=line.get_color(), label=label)
            tail_lo, tail_hi = min(tail_lo, *(y for _, y in tail)), max(tail_hi, *(y for _, y in tail))
        drawn += 1
    if drawn and tail_hi > tail_lo:
        pad = 0.08 * (tail_hi - tail_lo)
        ax_end.set_ylim(tail_lo - pad, tail_hi + pad)
    for ax in (ax_all, ax_end):
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("train loss (nats / token)")
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no training curves found", ha="center", va="center", transform=ax.transAxes)
    ax_all.set_title("Training loss, whole run")
    ax_end.set_title("Training loss, second half (zoomed)")
    _save(fig, out)


def bpb_by_stage(rows: Mapping[int, Mapping[str, float]], stages: Sequence[tuple[str, str]], out: Path,
                 reference: tuple[str, float] | None = None) -> None:
    """val BPB after each pipeline stage, one line per seed plus the mean; stages no seed has are left out.

    stages: (key in rows[seed], axis label) in pipeline order. reference: (label, BPB) drawn as a line."""
    keep = [(k, lab) for k, lab in stages if any(_finite(rows[s].get(k)) for s in rows)]
    fig, ax = _figure(8, 4.6)
    xs = list(range(len(keep)))
    for seed in rows:
        ys = [rows[seed].get(k) for k, _ in keep]
        ax.plot(xs, [y if _finite(y) else float("nan") for y in ys], marker="o", lw=1, alpha=0.8,
                label=f"seed {seed}")
    means = []
    for k, _ in keep:
        vals = [rows[s][k] for s in rows if _finite(rows[s].get(k))]
        means.append(sum(vals) / len(vals))
    if keep:
        ax.plot(xs, means, color="black", ls="--", marker="D", lw=1.8, label="mean")
        for x, m in zip(xs, means):
            ax.annotate(f"mean {m:.4f}", (x, m), textcoords="offset points", xytext=(9, -3), ha="left", fontsize=8,
                        bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.8})
    if reference is not None and _finite(reference[1]):
        ax.axhline(reference[1], color="tab:red", ls=":", lw=1.5, label=f"{reference[0]} ({reference[1]:.4f})")
    ax.set_xticks(xs)
    ax.set_xticklabels([lab for _, lab in keep])
    ax.set_xlim(-0.4, len(keep) - 0.3)  # room right of the last point for its label
    ax.margins(y=0.15)
    ax.set_ylabel("val BPB (bits per byte, lower is better)")
    ax.set_title("BPB after each stage, per seed")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, out)


def size_breakdown(sizes: Mapping[int, Mapping[str, int]], cap_bytes: int, out: Path) -> None:
    """Stacked bars, one per seed: artifact bytes by part (tensor groups' share of the compressed model,
    and the code). The cap is drawn when the artifacts come within half of it, else named in the title."""
    seeds = list(sizes)
    parts = sorted({p for s in seeds for p in sizes[s]}, key=lambda p: (p == "code", p))
    fig, ax = _figure(9.5, 2.0 + 0.55 * max(len(seeds), 1))
    colors = [f"C{i % 10}" for i in range(len(parts))]
    labels = [f"seed {s}" for s in seeds]
    left = [0.0] * len(seeds)
    for part, color in zip(parts, colors):
        widths = [sizes[s].get(part, 0) / 1e6 for s in seeds]
        ax.barh(labels, widths, left=left, color=color, label=f"{part} ({widths[0]:.3f} MB)" if seeds else part,
                edgecolor="white", linewidth=0.5)
        left = [a + b for a, b in zip(left, widths)]
    totals = [sum(sizes[s].values()) for s in seeds]
    top = max(totals, default=0)
    for y, tot in enumerate(totals):
        ax.annotate(f"{tot:,} B", (tot / 1e6, y), textcoords="offset points", xytext=(4, 0), va="center", fontsize=8,
                    bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.9}, zorder=5)
    if top >= cap_bytes / 2:
        ax.axvline(cap_bytes / 1e6, color="tab:red", ls="--", lw=1.5, label=f"cap {cap_bytes:,} B")
    ax.set_xlim(0, max(top, cap_bytes if top >= cap_bytes / 2 else 0) / 1e6 * 1.18 or 1)
    ax.invert_yaxis()  # first seed on top, as in the report's table
    ax.set_xlabel("MB (10^6 bytes); a tensor group's size is its share of the compressed model")
    room = f"{cap_bytes - top:,} bytes under the cap" if top <= cap_bytes else f"OVER the cap by {top - cap_bytes:,}"
    ax.set_title(f"Artifact size by part (cap {cap_bytes:,} bytes)\nlargest {top:,} bytes, {room}", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), title="part (first seed)",
              title_fontsize=8)
    _save(fig, out)
