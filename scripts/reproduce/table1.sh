#!/usr/bin/env bash
# D3.2 Table 1: clean (STD) and AutoAttack-style robust (ROB: APGD-CE + APGD-DLR, worst case) accuracy of ResNet18
# adversarially trained (PGD-linf) on k = 50 images per class chosen by each method, 3 seeds, next to the full
# training set. Then the tables are regenerated. Settings: mfc_common.sh and common.sh.
#
#   DATA_DIR=/data DOWNLOAD=true bash scripts/reproduce/table1.sh
#   LAUNCHER=slurm DATA_DIR=/shared/data bash scripts/reproduce/table1.sh hydra.launcher.gpus_per_node=1
#   DATASETS=digits SEEDS=0 EPOCHS=2 METHODS=rand,mcs bash scripts/reproduce/table1.sh energy=none   # quick check
#
#   METHODS    comma-separated methods (default: the paper's full,rand,mcs,craig,gradmatch,submod,dm,gm,tm)
#   MODEL      default: resnet18 (the paper's Table 1 model)
#   K          images per class (default: 50)
DATASETS="${DATASETS:-mnist cifar10 cifar100 svhn tinyimagenet}"
source "$(dirname "$0")/mfc_common.sh"
METHODS="${METHODS:-full,rand,mcs,craig,gradmatch,submod,dm,gm,tm}"

for dataset in ${DATASETS}; do
    sweep "table1-${dataset}" "${MFC[@]}" "dataset=${dataset}" "model=${MODEL:-resnet18}" "k=${K:-50}" \
        train=pgd_linf norm=linf "method=${METHODS}"
done
finish
