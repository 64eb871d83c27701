# The paper's GNN protocols for scripts/reproduce/table4.sh and table5.sh (sourced, not run). Switches and the
# settings every family shares (LAUNCHER=slurm, --dry-run, RESULTS_DIR, ...): common.sh.
#
# Environment (defaults = the paper's protocol):
#   DATASET          dataset of both protocols (default: ogbn-arxiv for the arxiv part, flickr for the Flickr part)
#   ARXIV_DATASET    dataset of the arxiv-protocol part (default: $DATASET or ogbn-arxiv; synthetic_arxiv has
#                    arxiv's exact shape and reproduces the memory column without a download)
#   FLICKR_DATASET   dataset of the Flickr-protocol part (default: $DATASET or flickr)
#   SEEDS            comma-separated seeds (default: 0,...,9)
#   EPOCHS           epochs of both parts (default: 500 for arxiv, 400 for Flickr)
#   PROTOCOLS        which parts to run, any of "arxiv flickr" (default: both)
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SEEDS="${SEEDS:-0,1,2,3,4,5,6,7,8,9}"
ARXIV_DATASET="${ARXIV_DATASET:-${DATASET:-ogbn-arxiv}}"
FLICKR_DATASET="${FLICKR_DATASET:-${DATASET:-flickr}}"
PROTOCOLS="${PROTOCOLS:-arxiv flickr}"
for protocol in ${PROTOCOLS}; do
    case "${protocol}" in
        arxiv | flickr) ;;
        *) echo "${SCRIPT_NAME}: unknown protocol '${protocol}' in PROTOCOLS; allowed: arxiv, flickr" >&2; exit 2 ;;
    esac
done

ARXIV=(experiment=gnn_blockquant "dataset=${ARXIV_DATASET}" "epochs=${EPOCHS:-500}" "seed=${SEEDS}")
FLICKR=(experiment=gnn_flickr "dataset=${FLICKR_DATASET}" "epochs=${EPOCHS:-400}" "seed=${SEEDS}")

wants() { [[ " ${PROTOCOLS} " == *" $1 "* ]]; }
