# Shared by every scripts/reproduce/<table>.sh (sourced, not run): the local/Slurm switch, --dry-run, and the
# settings every sweep takes. A table script sources its family's *_common.sh (which sources this file), calls
# `sweep <label> <overrides...>` once per sweep, then `finish`.
#
# Environment:
#   LAUNCHER      local (runs one job after another here) | slurm (one Slurm job array per sweep, all submitted at
#                 once; hydra.launcher.* overrides go in the extra arguments)                  default: local
#   RESULTS_DIR   where run records and tables go (default: ./results)
#   DATA_DIR      where datasets are looked for (default: ./data)
#   DEVICE        auto | cpu | cuda (default: auto)
#   DOWNLOAD      true lets the loaders download missing datasets where they can (default: false)
# Arguments: an optional first --dry-run (list every job and whether it is already done; run and submit nothing),
# then extra overrides passed to every sml-run call (e.g. energy=none, hydra.launcher.partition=gpu).
# Finished runs (an ok record under RESULTS_DIR) are skipped, so a script can be rerun after a partial failure,
# and runs that several tables share are done once. A sweep with a failed job does not stop the others: the tables
# are built from every record, then the script exits 1.
set -euo pipefail

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

COMMON=("results_dir=${RESULTS_DIR}" "data_dir=${DATA_DIR}" "device=${DEVICE}" "download=${DOWNLOAD}")
# Nanoseconds and this shell's pid: two scripts started at the same moment never share a sweep folder.
STAMP="$(date +%Y-%m-%d_%H-%M-%S-%N)-$$"
PIDS=()
FAILED_SWEEPS=()

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
        PIDS+=("$!:${label}")
    else
        local status=0
        "${cmd[@]}" || status=$?
        # 2: bad input, found before anything ran (the later sweeps share the arguments); >= 128: interrupted.
        if (( status == 2 || status >= 128 )); then
            exit "${status}"
        elif (( status != 0 )); then
            FAILED_SWEEPS+=("${label}")
        fi
    fi
}

# finish: wait for the Slurm sweeps, regenerate every table from the records (not after a dry run), then exit 1
# if any sweep had a failed job.
finish() {
    local entry tables=0
    for entry in "${PIDS[@]}"; do
        wait "${entry%%:*}" || FAILED_SWEEPS+=("${entry#*:}")
    done
    if [[ ${#DRY_RUN[@]} -eq 0 ]]; then
        sml-tables --results-dir "${RESULTS_DIR}" || tables=$?
    fi
    if (( ${#FAILED_SWEEPS[@]} )); then
        echo "${SCRIPT_NAME}: sweep(s) with failed jobs: ${FAILED_SWEEPS[*]} (summaries above); finished runs are" \
             "recorded and the tables built from them; rerun the script to retry only what failed" >&2
        exit 1
    fi
    exit "${tables}"
}
