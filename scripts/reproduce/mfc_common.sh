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

# figure_sweeps FIGURE DATASET MODEL DM_K: accuracy vs k for MCS, Rand and DM under standard, linf- and
# l2-adversarial training, evaluated by PGD under both norms; the full training set ("full" at the right of the
# plot); and DM at DM_K images per class, the paper's reference point. As in the deliverable ("generalized
# adversarial training over the MCS, classical adversarial training over other compressed datasets"), MCS trains
# adversarially with the generalized adversarial loss over its covering, each centre weighted by the images it
# covers (generalized=true weighted=true, see sustainml_exp/families/mfc_coreset/generalized.py).
figure_sweeps() {
    local figure="$1" dataset="$2" model="$3" dm_k="$4"
    local setting=("${MFC[@]}" "dataset=${dataset}" "model=${model}" "attack.names=[pgd_linf,pgd_l2]")
    local modes=train=standard,pgd_linf,pgd_l2
    sweep "${figure}-${dataset}-k" "${setting[@]}" "${modes}" method=rand,dm "k=${KS}"
    sweep "${figure}-${dataset}-mcs-standard" "${setting[@]}" train=standard method=mcs "k=${KS}"
    sweep "${figure}-${dataset}-mcs-generalized" "${setting[@]}" train=pgd_linf,pgd_l2 method=mcs generalized=true \
        weighted=true "k=${KS}"
    sweep "${figure}-${dataset}-full" "${setting[@]}" "${modes}" method=full
    sweep "${figure}-${dataset}-dm-reference" "${setting[@]}" "${modes}" method=dm "k=${dm_k}"
}
