#!/usr/bin/env bash
# The measurement of docs/results/continue-pretraining.md, every command in order, from the
# repository root (settings fixed before any result was seen). About 30 minutes on 2 cores.
#   bash docs/results/continue-pretraining/run.sh
set -euo pipefail
export OMP_NUM_THREADS=1
PY=${PYTHON:-python}
OUT=runs/continue
TAUS="1e-4 1e-3 1e-2 0.05 0.1 0.2 0.3 0.5"  # pareto-cpu's
# Scored like every pareto-cpu record: the same 256 validation sequences (data seed 0).
SCORE="--samples 256 --batch-size 16 --data-seed 0"

# 1. The base models: pareto-cpu's vanilla h64 (400 steps, 409,600 tokens), seeds 1 and 2.
#    Also prepares the tinyshakespeare tokenizer and indexed data under runs/data/.
$PY tools/sweep.py run recipes/sweeps/pareto-cpu.yaml --index 0 --index 1 --threads 1
mkdir -p $OUT
for seed in 1 2; do
  base=runs/sweeps/pareto-cpu/runs/h64-vanilla-k0-lam0-seed$seed
  $PY tools/eval_ppl.py $base $SCORE --output $OUT/base-seed$seed.json
  # 2. Export: a plain LlamaForCausalLM (sqrt(2.5 H) folded into its embeddings).
  $PY tools/export_hf.py $base $OUT/export-seed$seed
  for method in vanilla ponderlm3; do
    run=$OUT/$method-seed$seed
    k=3 taus="--taus $TAUS"
    [ $method = vanilla ] && k=0 taus=""
    # 3. Import it as a stock Llama checkpoint; 4. continue for 100 steps (102,400 tokens).
    $PY tools/convert_checkpoint.py import-hf $OUT/export-seed$seed $run \
        --recipe recipes/continue_cpu.yaml --method $method --k $k seed=$seed
    $PY -m megatron_ponder.train $run/config.yaml
    # 5. Perplexity and inference FLOPs per token (PonderLM-3 at every tau).
    $PY tools/eval_ppl.py $run $taus $SCORE --output $OUT/$method-seed$seed.json
  done
done
