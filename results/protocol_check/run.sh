#!/bin/sh
# The reduced protocol study (results/protocol_check/README.md): both protocols, one
# process each, jobs one after another, under nice. Re-running skips what is complete.
set -e
cd "$(dirname "$0")/../.."
COMMON="task=categorical_vae dataset=binarized_mnist data_dir=${DATA_DIR:-/work/shared/data}
  results_dir=results/protocol_check train.steps=1000 train.save_model=false
  eval.every=500 eval.at_start=false eval.train_subset=2000 eval.nll_samples=0
  eval.grad_samples=0 report.reduced=true"
EST="reinforce,reinforce_unnormalized,nvil,gumbel_softmax_r1e-4_n500"
PY="${PYTHON:-python}"
# seed 0 of both protocols first, then seed 1
for SEED in 0 1; do
  nice -n 10 $PY -m bench run +experiment=jang_vae_protocol $COMMON seed=$SEED \
    "+experiment/jang_protocol_estimator=$EST" train.lr=1e-3,3e-3
  nice -n 10 $PY -m bench run +experiment=adam_vae_protocol $COMMON seed=$SEED \
    +experiment/jang_estimator=plain "+experiment/jang_protocol_estimator=$EST" train.lr=1e-3,3e-3
done
