"""PNG plots for the report (matplotlib, Agg backend chosen inside each call)."""

from __future__ import annotations

from pathlib import Path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def training_curves(curves: dict[int, list[tuple[int, float]]], out: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    for seed, pts in sorted(curves.items()):
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=f"seed {seed}")
    ax.set_xlabel("step")
    ax.set_ylabel("train loss (nats/token)")
    ax.set_title("Training curves")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def bpb_by_stage(table: dict[int, dict[str, float]], stages: list[str], out: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    seeds = sorted(table)
    width = 0.8 / max(1, len(seeds))
    for i, seed in enumerate(seeds):
        vals = [table[seed].get(s, float("nan")) for s in stages]
        ax.bar([j + i * width for j in range(len(stages))], vals, width, label=f"seed {seed}")
    ax.set_xticks([j + width * (len(seeds) - 1) / 2 for j in range(len(stages))], stages)
    finite = [v for s in seeds for v in table[s].values() if v == v]
    if finite:
        lo, hi = min(finite), max(finite)
        ax.set_ylim(lo - 0.1 * (hi - lo + 1e-3), hi + 0.1 * (hi - lo + 1e-3))
    ax.set_ylabel("val BPB (lower is better)")
    ax.set_title("BPB by stage and seed")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def size_breakdown(groups: dict[str, int], code_bytes: int, total: int, cap: int, out: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    names = sorted(groups) + ["code"]
    vals = [groups[n] for n in sorted(groups)] + [code_bytes]
    ax.barh(names, [v / 1e6 for v in vals])
    ax.set_xlabel("MB (raw tensor bytes before compression; code as shipped)")
    ax.set_title(f"Artifact: {total / 1e6:.3f} MB compressed total (cap {cap / 1e6:.0f} MB)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
