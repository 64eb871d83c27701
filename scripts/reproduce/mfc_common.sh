# The paper's coreset protocol for scripts/reproduce/table1.sh, figure3.sh and figure4.sh (sourced, not run).
# Switches and the settings every family shares (LAUNCHER=slurm, --dry-run, RESULTS_DIR, ...): common.sh.
#
# Environment (defaults = the paper's protocol: SGD lr 0.01, momentum 0.9, weight decay 5e-4, 20 epochs, eps per
# dataset, APGD-CE + APGD-DLR with 5 restarts x 100 iterations):
#   DATASETS   space-separated datasets (defaults per script; digits runs without a download)
#   SEEDS      comma-separated seeds (default: 0,1,2, the paper's 3 repeats)
#   EPOCHS     epochs of every run (default: 20)
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

for dataset in ${DATASETS}; do
    case "${dataset}" in
        digits | mnist | fashion_mnist | cifar10 | cifar100 | svhn | tinyimagenet) ;;
        *) echo "${SCRIPT_NAME}: unknown dataset '${dataset}' in DATASETS; allowed: digits, mnist, fashion_mnist," \
                "cifar10, cifar100, svhn, tinyimagenet" >&2
           exit 2 ;;
    esac
done
SEEDS="${SEEDS:-0,1,2}"
MFC=(experiment=mfc_coreset "seed=${SEEDS}" "epochs=${EPOCHS:-20}")

# figure_sweeps FIGURE DATASET MODEL: accuracy vs k for MCS, Rand and DM under standard, linf- and l2-adversarial
# training, evaluated by PGD under both norms, plus the full training set ("full" at the right of the plot).
figure_sweeps() {
    local figure="$1" dataset="$2" model="$3"
    local setting=("${MFC[@]}" "dataset=${dataset}" "model=${model}" train=standard,pgd_linf,pgd_l2
                   "attack.names=[pgd_linf,pgd_l2]")
    sweep "${figure}-${dataset}-k" "${setting[@]}" method=mcs,rand,dm "k=${KS}"
    sweep "${figure}-${dataset}-full" "${setting[@]}" method=full
}
