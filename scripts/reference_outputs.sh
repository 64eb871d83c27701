#!/usr/bin/env bash
# Regenerates results/reference/<machine class>/: the CSVs, tables and figures of the paper reproductions on the
# embedded datasets (no download) and the benchmarks' outputs, stamped with the git SHA and every command that made
# them (STAMP.md there; each benchmark output also starts with its own command). results/README.md says how to use it.
#
# Usage: bash scripts/reference_outputs.sh [--short] [--resume]
#   --short    a quick version: fewer seeds and epochs, lighter attacks and condensation, short benchmarks (about
#              half an hour on 2 CPU cores); STAMP.md says which settings made the folder
#   --resume   keep the finished runs of an interrupted generation (same commit) instead of starting afresh
# Environment:
#   MACHINE_CLASS   the folder's name (default: cpu-<cores>core, or gpu-<name> when torch sees a GPU)
#   DEVICE          auto | cpu | cuda (default: auto)
#   PYTHON          the interpreter whose sml-run / sml-tables run (default: .venv/bin/python, else python3)
#   LOCK_FILE       run each benchmark under `flock LOCK_FILE` (on a machine shared with other heavy jobs)
#   ALLOW_DIRTY=1   generate from a checkout with uncommitted changes to tracked files (STAMP.md says so)
# Runs are recorded under results/runs/.reference/<machine class>/ (ignored by git and by sml-tables' own scan);
# the reference folder is replaced only once everything has finished.
set -euo pipefail
cd "$(dirname "$0")/.."

SHORT=0
RESUME=0
for arg in "$@"; do
    case "${arg}" in
        --short) SHORT=1 ;;
        --resume) RESUME=1 ;;
        *) echo "reference_outputs.sh: unknown argument '${arg}'; allowed: --short, --resume" >&2; exit 2 ;;
    esac
done

PYTHON="${PYTHON:-$([[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3)}"
PYTHON="$(cd "$(dirname "${PYTHON}")" && pwd)/$(basename "${PYTHON}")"
export PATH="$(dirname "${PYTHON}"):${PATH}"
DEVICE="${DEVICE:-auto}"
export DEVICE

if [[ -n "$(git status --porcelain --untracked-files=no)" && "${ALLOW_DIRTY:-0}" != 1 ]]; then
    echo "reference_outputs.sh: the checkout has uncommitted changes, so its SHA would not name the code that made" \
         "the outputs; commit them, or set ALLOW_DIRTY=1" >&2
    exit 2
fi
SHA="$(git rev-parse HEAD)"
DIRTY="$([[ -n "$(git status --porcelain --untracked-files=no)" ]] && echo " (with uncommitted changes)" || true)"
GPU="$("${PYTHON}" -c 'import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else "")')"
if [[ -n "${GPU}" ]]; then
    DEFAULT_CLASS="gpu-$(echo "${GPU}" | tr '[:upper:]' '[:lower:]' | sed -E 's/nvidia //; s/[^a-z0-9]+/-/g; s/-$//')"
else
    DEFAULT_CLASS="cpu-$(nproc)core"
fi
MACHINE_CLASS="${MACHINE_CLASS:-${DEFAULT_CLASS}}"
WORK="results/runs/.reference/${MACHINE_CLASS}"
OUT="results/reference/${MACHINE_CLASS}"
STAGE="${WORK}/out"
if (( ! RESUME )); then
    rm -rf "${WORK}"
fi
rm -rf "${STAGE}"
mkdir -p "${STAGE}/bench" "${WORK}/logs"
COMMANDS="${WORK}/commands.md"
: > "${COMMANDS}"

if (( SHORT )); then
    SETTINGS="short: fewer seeds and epochs, lighter attacks and condensation, short benchmarks"
    GNN=(SEEDS=0,1 EPOCHS=50)
    CSL=(SEEDS=0 EPOCHS=5)
    MFC=(SEEDS=0 EPOCHS=5)
    MFC_ARGS=(attack.aa_restarts=1 attack.aa_steps=20 condense.iterations=2 mcs.time_limit_s=5)
    BENCH_GNN=(--dataset synthetic --steps 2 --rounds 2)
    BENCH_CSL=(--steps 2)
    BENCH_MFC=(--n 1500 --k 10 --time-limit 10)
    BENCH_KERNELS=(--warmup 5 --rep 20)
    BENCH_LINEAR=(--rows 20000)
else
    SETTINGS="full: the reproduction scripts' seeds and epochs on the embedded datasets, the benchmarks' defaults"
    GNN=()
    CSL=()
    MFC=()
    MFC_ARGS=()
    BENCH_GNN=()
    BENCH_CSL=()
    BENCH_MFC=()
    BENCH_KERNELS=()
    BENCH_LINEAR=()
fi
KERNEL_DEVICE=()
[[ -z "${GPU}" ]] && KERNEL_DEVICE=(--device cpu)

# record OUTPUT COMMAND...: run the command, then note in STAMP.md what it made, how and how long it took.
record() {
    local output="$1"
    shift
    local start=${SECONDS}
    echo "+ $*" >&2
    "$@"
    printf '| %s | `%s` | %d |\n' "${output}" "$*" $((SECONDS - start)) >> "${COMMANDS}"
}

# family NAME ENVIRONMENT... -- SCRIPT ARGUMENTS...: one reproduction script into the family's own results folder.
reproduce() {
    local family="$1" script="$2"
    shift 2
    local env=()
    while [[ "$1" != -- ]]; do env+=("$1"); shift; done
    shift
    record "${family}/" env RESULTS_DIR="${WORK}/${family}" "${env[@]}" bash "scripts/reproduce/${script}" "$@"
}

# bench NAME ARGUMENTS...: a benchmark's output, headed by its command, SHA and time.
bench() {
    local name="$1"
    shift
    local cmd=("${PYTHON}" "scripts/${name}.py" "$@")
    local lock=()
    [[ -n "${LOCK_FILE:-}" ]] && lock=(flock "${LOCK_FILE}")
    {
        echo "# command: python scripts/${name}.py $*"
        echo "# git: ${SHA}${DIRTY}; machine class: ${MACHINE_CLASS}; $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    } > "${STAGE}/bench/${name}.txt"
    record "bench/${name}.txt" "${lock[@]}" "${cmd[@]}" >> "${STAGE}/bench/${name}.txt" 2> "${WORK}/logs/${name}.log"
}

LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"

reproduce gnn_blockquant table4.sh DATASET=synthetic "${GNN[@]}" -- 
reproduce gnn_blockquant table5.sh DATASET=synthetic "${GNN[@]}" --
reproduce csl_segmentation table3.sh DATASETS=synthetic_nuclei "${CSL[@]}" --
reproduce csl_segmentation table2.sh DATASETS=synthetic_nuclei "${CSL[@]}" --
reproduce mfc_coreset table1.sh DATASETS=digits MODEL=mlp "${MFC[@]}" -- "${MFC_ARGS[@]}"

bench bench_gnn "${BENCH_GNN[@]}"
bench bench_csl "${BENCH_CSL[@]}"
bench bench_mfc "${BENCH_MFC[@]}"
bench bench_kernels "${KERNEL_DEVICE[@]}" "${BENCH_KERNELS[@]}"
bench bench_linear_backward_memory "${KERNEL_DEVICE[@]}" "${BENCH_LINEAR[@]}"

for family in gnn_blockquant csl_segmentation mfc_coreset; do
    mkdir -p "${STAGE}/${family}"
    cp "${WORK}/${family}/${family}.csv" "${STAGE}/${family}/"
    cp -r "${WORK}/${family}/tables" "${STAGE}/${family}/"
done

{
    echo "# Reference outputs: ${MACHINE_CLASS}"
    echo
    echo "- git: \`${SHA}\`${DIRTY}"
    echo "- made: $(date -u +%Y-%m-%dT%H:%M:%SZ) by \`bash scripts/reference_outputs.sh $*\`"
    echo "- settings: ${SETTINGS}"
    echo "- machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores," \
         "$(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo) RAM, GPU: ${GPU:-none}," \
         "device=${DEVICE}"
    echo "- load average (1, 5, 15 min): ${LOAD_START} at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end"
    echo "- python: $("${PYTHON}" --version 2>&1), torch $("${PYTHON}" -c 'import torch; print(torch.__version__)')"
    echo
    echo "Each family's folder holds its merged CSV (one row per run, with the run's git SHA) and the tables and"
    echo "figures sml-tables made from it; the reproduction scripts ran sml-run, then sml-tables."
    echo
    echo "| output | command | wall (s) |"
    echo "|---|---|---|"
    cat "${COMMANDS}"
} > "${STAGE}/STAMP.md"

rm -rf "${OUT}"
mkdir -p "$(dirname "${OUT}")"
mv "${STAGE}" "${OUT}"
echo "reference outputs in ${OUT} (see ${OUT}/STAMP.md)" >&2
