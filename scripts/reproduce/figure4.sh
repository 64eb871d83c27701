#!/usr/bin/env bash
# D3.2 Figure 4: as Figure 3 on CIFAR10 with the ConvNet (3 x 128 channels, instance norm, average pooling). Then
# the tables and figures are regenerated. Settings: mfc_common.sh and common.sh.
#
#   DATA_DIR=/data DOWNLOAD=true bash scripts/reproduce/figure4.sh
#   LAUNCHER=slurm DATA_DIR=/shared/data bash scripts/reproduce/figure4.sh hydra.launcher.gpus_per_node=1
#
#   KS   comma-separated k (default: the paper's 50,100,200,300,400,500)
DATASETS="${DATASETS:-cifar10}"
KS="${KS:-50,100,200,300,400,500}"
source "$(dirname "$0")/mfc_common.sh"

for dataset in ${DATASETS}; do
    figure_sweeps figure4 "${dataset}" convnet
done
finish
