#!/usr/bin/env bash
# D3.2 Figure 3: test, linf- and l2-robust accuracy vs k (images per class) of MCS, Rand and DM on MNIST with the
# MLP (784-128-128-10), under standard, linf- and l2-adversarial training (MCS: the generalized adversarial loss),
# of the full training set, and of DM at k = 5000 (the paper's reference point). Then the tables and figures are
# regenerated. Settings: mfc_common.sh and common.sh.
#
#   DATA_DIR=/data DOWNLOAD=true bash scripts/reproduce/figure3.sh
#   DATASETS=digits KS=5,10 DM_K=100 SEEDS=0 EPOCHS=2 bash scripts/reproduce/figure3.sh energy=none   # quick check
#
#   KS     comma-separated k (default: the paper's 50,100,200,300,400,500)
#   DM_K   k of the DM reference point (default: the paper's 5000)
DATASETS="${DATASETS:-mnist}"
KS="${KS:-50,100,200,300,400,500}"
DM_K="${DM_K:-5000}"
source "$(dirname "$0")/mfc_common.sh"

for dataset in ${DATASETS}; do
    figure_sweeps figure3 "${dataset}" mlp "${DM_K}"
done
finish
