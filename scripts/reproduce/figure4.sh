#!/usr/bin/env bash
# D3.2 Figure 4: as Figure 3 on CIFAR10 with the ConvNet (3 x 128 channels, instance norm, average pooling), with
# DM at k = 4000 as the reference point. Then the tables and figures are regenerated. Settings: mfc_common.sh and
# common.sh.
#
#   DATA_DIR=/data DOWNLOAD=true bash scripts/reproduce/figure4.sh
#   LAUNCHER=slurm DATA_DIR=/shared/data bash scripts/reproduce/figure4.sh hydra.launcher.gpus_per_node=1
#
#   KS     comma-separated k (default: the paper's 50,100,200,300,400,500)
#   DM_K   k of the DM reference point (default: the paper's 4000)
DATASETS="${DATASETS:-cifar10}"
KS="${KS:-50,100,200,300,400,500}"
DM_K="${DM_K:-4000}"
source "$(dirname "$0")/mfc_common.sh"

for dataset in ${DATASETS}; do
    figure_sweeps figure4 "${dataset}" convnet "${DM_K}"
done
finish
