#!/usr/bin/env bash
# One packaged artifact scored by eval-sliding and eval-ttt on several process counts: the BPBs must agree to 1e-5
# (the sums are all-reduced in float64) and the seconds say what the extra GPUs buy. Run after a pipeline, on the
# same params and overrides:
#   CONFIG=configs/hybrid_12_b131k.yaml SEED=1337 NPROCS="2 1" bash bench/h200/eval_parity.sh
# Results: runs/<seed>/eval_parity/*.json, a summary in eval_parity.json, and $OUT/eval_parity.tgz.
set -uo pipefail
CONFIG=${CONFIG:-configs/hybrid_12_b131k.yaml}; SEED=${SEED:-1337}; NPROCS=${NPROCS:-1 2}
SETS=()
if [ -z "${LOCAL:-}" ]; then source bench/h200/h200_env.sh || exit 1; SETS=("${GOLF_DATA_ARGS[@]}"); fi
SETS+=(--set "seeds=[$SEED]")
for s in ${EXTRA_SETS:-}; do SETS+=(--set "$s"); done
RUNS=$(python3 -c "from golf.config import load_params as l; print(l('$CONFIG').runs_dir)")
for s in ${EXTRA_SETS:-}; do [[ $s == runs_dir=* ]] && RUNS=${s#runs_dir=}; done
dest="$RUNS/$SEED/eval_parity"; mkdir -p "$dest"
for n in $NPROCS; do
  for stage in eval_sliding eval_ttt; do
    python3 cli.py "${stage/_/-}" --seed "$SEED" -p "$CONFIG" "${SETS[@]}" --set "launch.nproc_per_node=$n" \
      2>&1 | grep -v "━" | tail -2
    [ "${PIPESTATUS[0]}" = 0 ] || exit 1
    cp "$RUNS/$SEED/metrics/$stage.json" "$dest/${stage}_n$n.json"
  done
done
python3 - "$dest" $NPROCS <<'PY'
import json, sys
from pathlib import Path
dest, nprocs = Path(sys.argv[1]), sys.argv[2:]
out = {}
for stage in ("eval_sliding", "eval_ttt"):
    runs = {n: json.loads((dest / f"{stage}_n{n}.json").read_text()) for n in nprocs}
    bpb = {n: r["val_bpb"] for n, r in runs.items()}
    out[stage] = {"val_bpb": bpb, "seconds": {n: r.get("eval_s") for n, r in runs.items()},
                  "max_bpb_diff": max(bpb.values()) - min(bpb.values()),
                  "world_sizes": {n: r.get("world_size") for n, r in runs.items()}}
(dest / "eval_parity.json").write_text(json.dumps(out, indent=1))
print(json.dumps(out, indent=1))
PY
if [ -n "${OUT:-}" ]; then tar czf "$OUT/eval_parity.tgz" "$dest"; fi
