#!/usr/bin/env bash
# The Llama-3-shaped measurement of docs/results/continue-pretraining.md, every command in
# order, from the repository root (settings fixed before any result was seen). Sized for
# about 25 minutes on the shared 2-core VM: ONE base model (seed 1), its two continuations
# (vanilla, PonderLM-3 K = 3) each with seeds 1 and 2 (different batch orders).
#   bash docs/results/continue-llama3/run.sh
set -euo pipefail
export OMP_NUM_THREADS=1
PY=${PYTHON:-python}
HERE=docs/results/continue-llama3
OUT=runs/continue-llama3
TAUS="1e-4 1e-3 1e-2 0.05 0.1 0.2 0.3 0.5"  # pareto-cpu's
SCORE="--samples 256 --batch-size 16 --data-seed 0"
mkdir -p $OUT/data $OUT/records

# 1. A byte-level BPE tokenizer.json (<= 512 ids, <|endoftext|> = 0) and the data it tokenises.
$PY tools/train_tokenizer.py --kind hf-bpe --input /work/shared/data/tinyshakespeare.txt \
    --output-prefix $OUT/data/bpe --vocab-size 512
$PY tools/preprocess_data.py --input /work/shared/data/tinyshakespeare.txt \
    --tokenizer $OUT/data/bpe --output-prefix $OUT/data/text_document --no-progress
# 2. The base: vanilla, Llama-3-shaped, 400 steps; 3. exported as a stock LlamaForCausalLM
#    with its rope_scaling and the tokenizer.json shipped unchanged.
$PY -m megatron_ponder.train $HERE/base.yaml
$PY tools/eval_ppl.py $OUT/base $SCORE --output $OUT/records/base.json
$PY tools/export_hf.py $OUT/base $OUT/export
for seed in 1 2; do
  for method in vanilla ponderlm3; do
    run=$OUT/$method-seed$seed
    k=3 taus="--taus $TAUS"
    [ $method = vanilla ] && k=0 taus=""
    # 4. Imported as a Hugging Face checkpoint (its own tokenizer), continued 100 steps.
    $PY tools/convert_checkpoint.py import-hf $OUT/export $run \
        --recipe $HERE/continue.yaml --method $method --k $k seed=$seed
    $PY -m megatron_ponder.train $run/config.yaml
    $PY tools/eval_ppl.py $run $taus $SCORE --output $OUT/records/$method-seed$seed.json
  done
done
