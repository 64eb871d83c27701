#!/usr/bin/env bash
# D3.2 Table 3: test Dice on MoNuSeg and CoNSeP of the self-supervised method over 10 seeds (max, mean +- std, 80th
# percentile, time to convergence) and of the intensity-threshold and supervised baselines; Figure 7-style overlays.
# The paper's protocol: MSE on MoNuSeg, CE on CoNSeP, channel and epoch chosen on the training images' labels. Then
# the tables are regenerated. Settings: csl_common.sh and common.sh.
#
#   DATA_DIR=/data bash scripts/reproduce/table3.sh
#   LAUNCHER=slurm DATA_DIR=/shared/data bash scripts/reproduce/table3.sh hydra.launcher.gpus_per_node=1
#   DATASETS=synthetic_nuclei SEEDS=0,1 EPOCHS=5 bash scripts/reproduce/table3.sh energy=none   # quick check
DATASETS="${DATASETS:-monuseg consep}"
SEEDS="${SEEDS:-0,1,2,3,4,5,6,7,8,9}"
source "$(dirname "$0")/csl_common.sh"

for dataset in ${DATASETS}; do
    sweep "${dataset}-csl" "${CSL[@]}" "dataset=${dataset}" method=csl "similarity=$(similarity_of "${dataset}")"
    sweep "${dataset}-baselines" "${CSL[@]}" "dataset=${dataset}" method=threshold,supervised
done
finish
