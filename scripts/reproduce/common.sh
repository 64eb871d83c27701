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
# and runs that several tables share are done once.
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
STAMP="$(date +%Y-%m-%d_%H-%M-%S)"
PIDS=()

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
