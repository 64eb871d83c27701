# The paper's segmentation protocol for scripts/reproduce/table2.sh and table3.sh (sourced, not run). Switches and
# the settings every family shares (LAUNCHER=slurm, --dry-run, RESULTS_DIR, ...): common.sh.
#
# Environment (defaults = the paper's protocol; epochs, crops, patch size and grid follow the dataset, see
# csl_protocol in sustainml_exp/families/csl_segmentation/config.py):
#   DATASETS       space-separated datasets (table2.sh default: monuseg; table3.sh default: monuseg consep;
#                  synthetic_nuclei runs without a download)
#   SEEDS          comma-separated seeds (table2.sh default: 0,1,2; table3.sh default: 0,...,9)
#   EPOCHS         epochs of every run (default: the dataset's protocol, 300 for MoNuSeg and CoNSeP)
#   SIMILARITIES   comma-separated similarities of the method (default: the paper's per dataset, see similarity_of)
#   SELECTION      how channel and epoch are chosen (default: train_labels, the paper's protocol: train on every
#                  training image and choose on their labels; val_split holds 20 % of them out instead)
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

for dataset in ${DATASETS}; do
    case "${dataset}" in
        monuseg | consep | synthetic_nuclei) ;;
        *) echo "${SCRIPT_NAME}: unknown dataset '${dataset}' in DATASETS; allowed: monuseg, consep, synthetic_nuclei" >&2
           exit 2 ;;
    esac
done
CSL=(experiment=csl_segmentation "seed=${SEEDS}" "selection=${SELECTION:-train_labels}")
if [[ -n "${EPOCHS:-}" ]]; then
    CSL+=("epochs=${EPOCHS}")
fi

# similarity_of DATASET: the similarity of the deliverable's result on DATASET (MSE on MoNuSeg, CE on CoNSeP),
# unless SIMILARITIES is set.
similarity_of() {
    case "$1" in
        consep) echo "${SIMILARITIES:-ce}" ;;
        *) echo "${SIMILARITIES:-mse}" ;;
    esac
}
