# The paper's segmentation protocol for scripts/reproduce/table2.sh and table3.sh (sourced, not run). Switches and
# the settings every family shares (LAUNCHER=slurm, --dry-run, RESULTS_DIR, ...): common.sh.
#
# Environment (defaults = the paper's protocol; epochs, crops, patch size and grid follow the dataset, see
# csl_protocol in sustainml_exp/families/csl_segmentation/config.py):
#   DATASETS       space-separated datasets (table2.sh default: monuseg; table3.sh default: monuseg consep;
#                  synthetic_nuclei runs without a download)
#   SEEDS          comma-separated seeds (table2.sh default: 0,1,2; table3.sh default: 0,...,9)
#   EPOCHS         epochs of every run (default: the dataset's protocol, 300 for MoNuSeg and CoNSeP)
#   SIMILARITIES   comma-separated similarities of the method (default: mse)
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

for dataset in ${DATASETS}; do
    case "${dataset}" in
        monuseg | consep | synthetic_nuclei) ;;
        *) echo "${SCRIPT_NAME}: unknown dataset '${dataset}' in DATASETS; allowed: monuseg, consep, synthetic_nuclei" >&2
           exit 2 ;;
    esac
done
SIMILARITIES="${SIMILARITIES:-mse}"
CSL=(experiment=csl_segmentation "seed=${SEEDS}")
if [[ -n "${EPOCHS:-}" ]]; then
    CSL+=("epochs=${EPOCHS}")
fi
