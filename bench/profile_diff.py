"""Where two or more profiled runs differ: device milliseconds per step by kernel family and by kernel, side by
side, each against the first profile.

Reads the profile summary that golf.profiling writes: a training run's `runs/<seed>/train/profile.json`
(`--set train.profile_steps=3`), or a `bench/train_throughput.py --profile-steps` JSON (its "profile" key).
The question it answers: a process that steps slower than another running the same code (the hybrid's
process-to-process spread, bench/RESULTS.md), or a variant that steps slower than its base, spends the extra
milliseconds in which kernels? Families come first (every family any profile has), then the --top kernels whose
time differs most from the first profile's (largest absolute difference in any profile), with calls per step.

    python bench/profile_diff.py base/profile.json slow/profile.json
    python bench/profile_diff.py --top 20 --label base,golf_split \\
        bench/results/2026-11-30_c83fbd3f_golf_kernels_step/profile/throughput_hybrid_seed_fit.json \\
        bench/results/2026-11-30_c83fbd3f_golf_kernels_step/profile/throughput_hybrid_seed_fit__model.ssm_scan-golf_split.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from golf.io import write_text_atomic

SUMMARY_KEYS = ("wall_ms_per_step", "device_busy_ms_per_step", "ms_per_step")


def load_profile(path: Path) -> dict:
    """The profile summary in a JSON file (the file itself, or its "profile" entry); a ValueError naming what is
    missing."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"error: cannot read {path} as JSON ({e})") from None
    prof = data.get("profile", data) if isinstance(data, dict) else None
    if not isinstance(prof, dict) or "by_family_ms" not in prof or "top" not in prof:
        raise ValueError(f"error: {path} holds no profile summary (expected by_family_ms and top, as "
                         "train/profile.json or a train_throughput.py --profile-steps JSON)")
    return prof


def kernel_ms(prof: dict) -> dict[str, tuple[float, float]]:
    """{kernel name: (ms per step, calls per step)} of a profile's top kernels."""
    return {k["name"]: (k["ms_per_step"], k["calls_per_step"]) for k in prof["top"]}


def diff_rows(profiles: list[dict], top: int) -> tuple[list[list], list[list]]:
    """(family rows, kernel rows): each row a name, then per profile its ms per step, then per later profile its
    difference from the first. A name a profile lacks counts 0 there (a kernel below its top list, or absent)."""
    def row(name: str, values: list[float]) -> list:
        return [name, *values, *(v - values[0] for v in values[1:])]

    families = sorted({f for p in profiles for f in p["by_family_ms"]},
                      key=lambda f: -max(p["by_family_ms"].get(f, 0.0) for p in profiles))
    fam_rows = [row(f, [p["by_family_ms"].get(f, 0.0) for p in profiles]) for f in families]
    kms = [kernel_ms(p) for p in profiles]
    names = {n for k in kms for n in k}
    spread = {n: max(abs(k.get(n, (0.0, 0))[0] - kms[0].get(n, (0.0, 0))[0]) for k in kms) for n in names}
    picked = sorted(names, key=lambda n: (-spread[n], n))[:top]
    ker_rows = [row(n[:90], [k.get(n, (0.0, 0))[0] for k in kms]) + [
        "/".join(f"{k[n][1]:g}" if n in k else "-" for k in kms)] for n in picked]
    return fam_rows, ker_rows


def markdown(rows: list[list], header: list[str], n: int) -> str:
    """rows as diff_rows makes them for n profiles: the n values plain, the n - 1 differences signed."""
    def cells(r: list) -> list[str]:
        return [str(r[0]), *(f"{v:.3f}" for v in r[1:n + 1]), *(f"{v:+.3f}" for v in r[n + 1:2 * n]),
                *(str(v) for v in r[2 * n:])]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cells(r)) + " |" for r in rows])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("profiles", nargs="+", type=Path, help="two or more profile JSONs; the first is the base")
    ap.add_argument("--label", help="comma-separated names for the profiles (default: their file names)")
    ap.add_argument("--top", type=int, default=15, help="kernels listed, largest difference first (default 15)")
    ap.add_argument("--json", type=Path, help="also write the tables here")
    a = ap.parse_args(argv)
    if len(a.profiles) < 2:
        print("error: give at least two profile JSONs (the first is the base)", file=sys.stderr)
        return 2
    labels = a.label.split(",") if a.label else [p.stem for p in a.profiles]
    if len(labels) != len(a.profiles):
        print(f"error: --label names {len(labels)} profiles, but {len(a.profiles)} were given", file=sys.stderr)
        return 2
    if a.top < 1:
        print(f"error: --top must be at least 1, got {a.top}", file=sys.stderr)
        return 2
    try:
        profiles = [load_profile(p) for p in a.profiles]
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    fam_rows, ker_rows = diff_rows(profiles, a.top)
    deltas = [f"Δ {lab}" for lab in labels[1:]]
    print(" | ".join(f"{lab}: {', '.join(f'{k} {p[k]}' for k in SUMMARY_KEYS if k in p)}"
                     for lab, p in zip(labels, profiles)))
    print("\nms per step by kernel family\n")
    print(markdown(fam_rows, ["family", *labels, *deltas], len(profiles)))
    print(f"\nthe {len(ker_rows)} kernels that differ most from {labels[0]} (ms per step; calls per step)\n")
    print(markdown(ker_rows, ["kernel", *labels, *deltas, "calls"], len(profiles)))
    if a.json:
        write_text_atomic(a.json, json.dumps({"labels": labels, "families": fam_rows, "kernels": ker_rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
