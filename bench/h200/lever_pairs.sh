#!/usr/bin/env bash
# Issue 23's lever table, a slice per device call: each lever as a 90-s training run on both sides at once,
# the hybrid (HYBRID, default configs/hybrid_seed_fit.yaml) on GPU 0 and attention-only (ATTN, default
# configs/attn_fit.yaml) on GPU 1, through bench/h200/h200_train_sweep.sh (GPUS=2: variant i on GPU i % 2; GPUS=1
# on a one-GPU machine runs them in turn, twice the call time). Both
# sides get the same runs; where a lever exists on one side only, the other side's row is its nearest analogue.
# PART=1..8 picks three pairs (about 7 minutes of call time on a warm machine: a changed model compiles anew, 45-60 s
# of warm-up on 2026-11-30); PART=all runs every pair.
#   PART=1 bash bench/h200/lever_pairs.sh      # carry .carry (corpus) as for h200_train_sweep.sh
# HYBRID_SETS / ATTN_SETS: overrides added to every run of that side. Fixed-step runs, immune to the hybrid's
# process-to-process step spread (up to 16% at 90 s, RESULTS fifth block), give each side its base's step count
# at 90 s and no wall-clock budget; the schedules then follow steps (golf.train.budget_progress):
#   WALL=0 HYBRID_SETS="train.max_steps=480" ATTN_SETS="train.max_steps=620" PART=2 bash bench/h200/lever_pairs.sh
# Fixed-step runs may share each GPU (PER_GPU, h200_train_sweep.sh): PART=2,3 PER_GPU=3 runs six pairs in two rounds
# of three runs a GPU. PART takes one part, a comma-separated list, or all.
# PAIRS_FILE=<file> takes the pairs from that file instead of the list below, one "<hybrid overrides> | <attention
# overrides>" line each, in double quotes as below (other lines are ignored); bench/lever_table.py --pairs reads
# the same file. bench/h200/pairs_mamba_mlp.txt holds the Mamba-MLP hybrid's shape levers:
#   HYBRID=configs/hybrid_mlp_tuned_fit.yaml ATTN=configs/attn_tuned_fit.yaml PAIRS_FILE=bench/h200/pairs_mamba_mlp.txt \
#     WALL=0 HYBRID_SETS="train.max_steps=620" ATTN_SETS="train.max_steps=620" PART=1 bash bench/h200/lever_pairs.sh
set -uo pipefail
HYBRID=${HYBRID:-configs/hybrid_seed_fit.yaml}; ATTN=${ATTN:-configs/attn_fit.yaml}
# "hybrid overrides | attention overrides" ("" = the config as it is)
PAIRS=(
  " | "
  "model.rope_dims=16 | model.rope_dims=16"
  "model.xsa=true | model.xsa=true"
  "model.mlp_act=leaky_relu2 | model.mlp_act=leaky_relu2"
  "model.smear_gate=true | model.smear_gate=true"
  "model.ln_scale=true | model.ln_scale=true"
  "train.warmdown_frac=0.5 | train.warmdown_frac=0.5"
  "train.qat_start_frac=0.7 | train.qat_start_frac=0.7"
  "train.batch_tokens=65536 | train.batch_tokens=65536"
  # Mamba blocks with their own MLP, fewer of them (7 M + 3 A: 26.80M params, hybrid_seed_fit 26.72M) | attention
  # fewer and wider (10 layers, MLP 3.5x: 27.09M, attn_fit 26.83M)
  "model.layer_pattern=MMMAMMAMMA model.mamba_mlp_mult=2.75 | model.layer_pattern=AAAAAAAAAA model.mlp_mult=3.5"
  # state carried across consecutive training windows (Mamba only) | attention's nearest: half the context
  "train.carry_state=true | train.seq_len=1024"
  "train.ema_decay=0.99 | train.ema_decay=0.99"
  # mixer shapes | attention's own: a smaller SSM state (26.22M params) | fewer, wider heads (4 of 128)
  "model.d_state=16 | model.num_heads=4 model.num_kv_heads=2"
  # fewer, wider SSM heads (6 of 128) | fewer KV heads (2; 25.39M params)
  "model.headdim=128 | model.num_kv_heads=2"
  # the 3 attention layers spread out (every sixth) | attention deeper and narrower (12 layers, MLP 2.5x: 26.05M)
  "model.layer_pattern=MMMMMAMMMMMAMMMMMA | model.layer_pattern=AAAAAAAAAAAA model.mlp_mult=2.5"
  # the training levers both configs carry, each off
  "train.weight_decay_matrix=0.0 train.weight_decay_embed=0.0 | train.weight_decay_matrix=0.0 train.weight_decay_embed=0.0"
  "train.muon_momentum_warmup_steps=0 | train.muon_momentum_warmup_steps=0"
  "train.grad_clip=0.0 | train.grad_clip=0.0"
  # the longest context of the issue (the 90-s sweep of 2026-11-30 ran 4,096 and 8,192): 8 sequences a step
  "train.seq_len=16384 | train.seq_len=16384"
  # no positional encoding in the attention layers (NoPE): the hybrid's Mamba layers carry position
  "model.rope=false | model.rope=false"
  # a narrower mixer, its parameters moved into MLPs: the SSM at expand 1 (8 heads of 64) with an MLP in each
  # Mamba block (26.70M) | 2 KV heads and MLP 3.25x (26.83M, attn_fit's count)
  "model.expand=1.0 model.mamba_mlp_mult=0.75 | model.num_kv_heads=2 model.mlp_mult=3.25"
  # half the batch at the fixed-step bases' tokens: twice their steps (480 and 620; at fixed steps the plain
  # batch pair above trains on half the tokens, so it compares nothing there; under a 90-s budget these caps
  # lie above the steps it buys)
  "train.batch_tokens=65536 train.max_steps=960 | train.batch_tokens=65536 train.max_steps=1240"
  # each side's levers that beat noise at fixed steps so far (RESULTS sixth block), together; then with QAT
  # from 70% of training and, for attention, partial RoPE as well
  "model.rope_dims=16 model.mlp_act=leaky_relu2 train.warmdown_frac=0.5 | model.xsa=true model.mlp_act=leaky_relu2 train.warmdown_frac=0.5"
  "model.rope_dims=16 model.mlp_act=leaky_relu2 train.warmdown_frac=0.5 train.qat_start_frac=0.7 | model.xsa=true model.rope_dims=16 model.mlp_act=leaky_relu2 train.warmdown_frac=0.5 train.qat_start_frac=0.7"
)
if [ -n "${PAIRS_FILE:-}" ]; then
  if [ ! -f "$PAIRS_FILE" ]; then
    echo "error: PAIRS_FILE must be a file of pair lines, not '$PAIRS_FILE' (no such file)" >&2; exit 2
  fi
  PAIRS=()
  pair_line='^[[:space:]]*"([^"|]*\|[^"|]*)"[[:space:]]*$'  # the pattern bench/lever_table.py reads too
  while IFS= read -r line || [ -n "$line" ]; do
    [[ $line =~ $pair_line ]] && PAIRS+=("${BASH_REMATCH[1]}")
  done < "$PAIRS_FILE"
  if [ ${#PAIRS[@]} -eq 0 ]; then
    echo "error: PAIRS_FILE '$PAIRS_FILE' holds no pair lines (\"<hybrid overrides> | <attention overrides>\")" >&2
    exit 2
  fi
fi
NPARTS=$(( (${#PAIRS[@]} + 2) / 3 ))
pick=()
if [ "${PART:-all}" = all ]; then
  pick=("${PAIRS[@]}")
else
  IFS=, read -ra parts <<< "$PART"
  for part in "${parts[@]}"; do
    case "$part" in
      *[!0-9]* | "" | 0*) bad=1 ;;
      *) (( part > NPARTS )) && bad=1 ;;
    esac
    if [ -n "${bad:-}" ]; then
      echo "error: PART must be 1 to $NPARTS, a comma-separated list of them, or all, not '${PART}'" >&2; exit 2
    fi
    pick+=("${PAIRS[@]:$(( (part - 1) * 3 )):3}")
  done
fi
variants=()
for pair in "${pick[@]}"; do
  read -ra h <<< "${pair%%|*}"; read -ra a <<< "${pair#*|}"  # the words of each side's overrides
  variants+=("$(echo "config=$HYBRID" ${HYBRID_SETS:-} "${h[@]}")" "$(echo "config=$ATTN" ${ATTN_SETS:-} "${a[@]}")")
done
GPUS=${GPUS:-2} CONFIG=$HYBRID bash "${SWEEP:-bench/h200/h200_train_sweep.sh}" "${variants[@]}"  # SWEEP: tests/test_h200_env.py
