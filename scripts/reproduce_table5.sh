#!/usr/bin/env bash
# Reproduce D3.2 Table 5 (activation statistics): EXACT INT2 D/R=8 runs (one group per row, d = R = 16 on
# ogbn-arxiv) with the paper's protocols; each quantized run records its per-layer statistics by default
# (activation_stats=true), then sml-tables writes table5.md/.tex and figure9/10.png.
#
#   bash scripts/reproduce_table5.sh
#   DATASET=synthetic SEEDS=0 EPOCHS=20 DEVICE=cpu bash scripts/reproduce_table5.sh energy=none   # quick check
#
# Environment: DATASET, ARXIV_DATASET, FLICKR_DATASET, SEEDS, EPOCHS, PROTOCOLS, RESULTS_DIR, DATA_DIR, DEVICE,
# DOWNLOAD as in reproduce_table4.sh. The EXACT runs are the same runs as Table 4's (same run_id), so running
# both scripts records each of them once.
# Extra arguments are passed to every sml-run call.
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

common=("seed=${SEEDS}" "results_dir=${RESULTS_DIR}" "data_dir=${DATA_DIR}" "device=${DEVICE}"
        "download=${DOWNLOAD}" quant=exact vm=false activation_stats=true)
EXTRA_ARGS=("$@")

sweep() {
    echo "+ sml-run -m $*" >&2
    sml-run -m "$@" "${common[@]}" "${EXTRA_ARGS[@]}"
}

for protocol in ${PROTOCOLS}; do
    case "${protocol}" in
        arxiv) sweep experiment=gnn_blockquant "dataset=${ARXIV_DATASET}" "epochs=${ARXIV_EPOCHS}" ;;
        flickr) sweep experiment=gnn_flickr "dataset=${FLICKR_DATASET}" "epochs=${FLICKR_EPOCHS}" ;;
        *)
            echo "reproduce_table5.sh: unknown protocol '${protocol}' in PROTOCOLS; allowed: arxiv flickr" >&2
            exit 2
            ;;
    esac
done

sml-tables --results-dir "${RESULTS_DIR}"
