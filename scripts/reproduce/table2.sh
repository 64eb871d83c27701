#!/usr/bin/env bash
# D3.2 Table 2: median validation Dice of the self-supervised method on MoNuSeg over 3 runs, against the number of
# patches (5-25, at 50 x 50 patches) and the patch size (20-120, at 10 patches); then the tables are regenerated.
# Settings: csl_common.sh and common.sh.
#
#   DATA_DIR=/data bash scripts/reproduce/table2.sh
#   LAUNCHER=slurm DATA_DIR=/shared/data bash scripts/reproduce/table2.sh --dry-run     # 27 jobs, nothing submitted
#   DATASETS=synthetic_nuclei SEEDS=0 EPOCHS=5 bash scripts/reproduce/table2.sh energy=none   # quick check
DATASETS="${DATASETS:-monuseg}"
SEEDS="${SEEDS:-0,1,2}"
source "$(dirname "$0")/csl_common.sh"

for dataset in ${DATASETS}; do
    sweep "${dataset}-patches" "${CSL[@]}" "dataset=${dataset}" method=csl "similarity=$(similarity_of "${dataset}")" \
        n_patches=5,10,15,20,25 patch_size=50
    # 50 x 50 at 10 patches is already in the sweep above.
    sweep "${dataset}-patch-size" "${CSL[@]}" "dataset=${dataset}" method=csl "similarity=$(similarity_of "${dataset}")" \
        n_patches=10 patch_size=20,30,80,120
done
finish
