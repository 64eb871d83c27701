# Shared by scripts/reproduce/table4.sh and table5.sh (sourced, not run): the paper's GNN protocols, the
# local/Slurm switch and --dry-run. Each table script calls `sweep <label> <overrides...>` per sweep, then `finish`.
#
# Environment (defaults = the paper's protocol):
#   LAUNCHER         local (runs one job after another here) | slurm (one Slurm job array per sweep, all
#                    submitted at once; hydra.launcher.* overrides go in the extra arguments)    default: local
#   DATASET          dataset of both protocols (default: ogbn-arxiv for the arxiv part, flickr for the Flickr part)
#   ARXIV_DATASET    dataset of the arxiv-protocol part (default: $DATASET or ogbn-arxiv; synthetic_arxiv has
#                    arxiv's exact shape and reproduces the memory column without a download)
#   FLICKR_DATASET   dataset of the Flickr-protocol part (default: $DATASET or flickr)
#   SEEDS            comma-separated seeds (default: 0,...,9)
#   EPOCHS           epochs of both parts (default: 500 for arxiv, 400 for Flickr)
#   PROTOCOLS        which parts to run, any of "arxiv flickr" (default: both)
#   RESULTS_DIR      where run records and tables go (default: ./results)
#   DATA_DIR         where datasets are looked for (default: ./data)
#   DEVICE           auto | cpu | cuda (default: auto)
#   DOWNLOAD         true lets the loaders download missing datasets (default: false)
# Arguments: an optional first --dry-run (list every job and whether it is already done; submit nothing), then
# extra overrides passed to every sml-run call (e.g. energy=none, hydra.launcher.partition=gpu).
# Finished runs (an ok record under RESULTS_DIR) are skipped, so a script can be rerun after a partial failure,
# and runs shared by both tables are done once.
set -euo pipefail

SEEDS="${SEEDS:-0,1,2,3,4,5,6,7,8,9}"
ARXIV_DATASET="${ARXIV_DATASET:-${DATASET:-ogbn-arxiv}}"
FLICKR_DATASET="${FLICKR_DATASET:-${DATASET:-flickr}}"
ARXIV_EPOCHS="${EPOCHS:-500}"
FLICKR_EPOCHS="${EPOCHS:-400}"
PROTOCOLS="${PROTOCOLS:-arxiv flickr}"
RESULTS_DIR="${RESULTS_DIR:-./results}"
DATA_DIR="${DATA_DIR:-./data}"
DEVICE="${DEVICE:-auto}"
DOWNLOAD="${DOWNLOAD:-false}"
LAUNCHER="${LAUNCHER:-local}"
SCRIPT_NAME="$(basename "$0")"

DRY_RUN=()
if [[ "${1:-}" == "--dry-run" ]]; then
    DRY_RUN=(--dry-run)
    shift
fi
EXTRA_ARGS=("$@")

case "${LAUNCHER}" in
    local) LAUNCH_ARGS=() ;;
    slurm) LAUNCH_ARGS=(hydra/launcher=slurm) ;;
    *) echo "${SCRIPT_NAME}: LAUNCHER='${LAUNCHER}' is not allowed; allowed: local, slurm" >&2; exit 2 ;;
esac
for protocol in ${PROTOCOLS}; do
    case "${protocol}" in
        arxiv | flickr) ;;
        *) echo "${SCRIPT_NAME}: unknown protocol '${protocol}' in PROTOCOLS; allowed: arxiv, flickr" >&2; exit 2 ;;
    esac
done

ARXIV=(experiment=gnn_blockquant "dataset=${ARXIV_DATASET}" "epochs=${ARXIV_EPOCHS}")
FLICKR=(experiment=gnn_flickr "dataset=${FLICKR_DATASET}" "epochs=${FLICKR_EPOCHS}")
COMMON=("seed=${SEEDS}" "results_dir=${RESULTS_DIR}" "data_dir=${DATA_DIR}" "device=${DEVICE}"
        "download=${DOWNLOAD}")
STAMP="$(date +%Y-%m-%d_%H-%M-%S)"
PIDS=()

wants() { [[ " ${PROTOCOLS} " == *" $1 "* ]]; }

# sweep LABEL OVERRIDES...: one `sml-run -m`. On Slurm the sweeps run side by side (each sml-run blocks until its
# array ends), each in its own sweep folder so that their Hydra output folders never collide.
sweep() {
    local label="$1"
    shift
    local cmd=(sml-run -m "${LAUNCH_ARGS[@]}" "$@" "${COMMON[@]}"
               "hydra.sweep.dir=${RESULTS_DIR}/multirun/${STAMP}-${label}" "${EXTRA_ARGS[@]}" "${DRY_RUN[@]}")
    echo "+ ${cmd[*]}" >&2
    if [[ "${LAUNCHER}" == slurm && ${#DRY_RUN[@]} -eq 0 ]]; then
        "${cmd[@]}" &
        PIDS+=($!)
    else
        "${cmd[@]}"
    fi
}

# finish: wait for the Slurm sweeps, then regenerate every table from the records (not after a dry run).
finish() {
    local failed=0 pid
    for pid in "${PIDS[@]}"; do
        wait "${pid}" || failed=1
    done
    if (( failed )); then
        echo "${SCRIPT_NAME}: a sweep failed (see above); its finished runs are recorded, rerun to retry the rest" >&2
        exit 1
    fi
    if [[ ${#DRY_RUN[@]} -eq 0 ]]; then
        sml-tables --results-dir "${RESULTS_DIR}"
    fi
}
