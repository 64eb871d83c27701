#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine, for trying and testing `sml-run -m hydra/launcher=slurm`.
#
#   sudo bash scripts/local_slurm.sh start    # install slurm-wlm + munge if missing, write the config, start daemons
#   bash scripts/local_slurm.sh status        # controller, node and queue state; exit 1 when the cluster is not up
#   sudo bash scripts/local_slurm.sh stop     # cancel jobs, stop the daemons, remove their state
#
# One partition (`debug`, the default) holding this node with all its CPUs. Accounting is off (no slurmdbd), so
# `sacct` has nothing to report; submitit then learns a job's end from its result file, which is all it needs.
# The config is written to /etc/slurm/slurm.conf with a marker line; a slurm.conf without the marker belongs to
# someone else and is never overwritten.
set -euo pipefail

PARTITION="debug"
CONF_DIR="/etc/slurm"
CONF="${CONF_DIR}/slurm.conf"
MARKER="# written by sustainml-exp scripts/local_slurm.sh"
STATE_DIRS=(/var/spool/slurmctld /var/spool/slurmd /var/log/slurm)
WAIT_S="${SML_SLURM_WAIT_S:-60}"

die() { echo "local_slurm.sh: error: $*" >&2; exit 1; }

need_root() {
    [[ "$(id -u)" == 0 ]] || die "'$1' needs root (it installs packages and starts system daemons); run it with sudo"
}

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
        && command -v sbatch >/dev/null; then
        return
    fi
    echo "installing slurm-wlm and munge ..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q slurm-wlm munge >/dev/null \
        || { apt-get update -q >/dev/null && apt-get install -y -q slurm-wlm munge >/dev/null; } \
        || die "could not install slurm-wlm and munge with apt-get"
}

# pgrep also lists zombies (a daemon's exited parent that nobody reaps in a container); they are not running.
alive() {
    local pid
    for pid in $(pgrep -x "$1"); do
        [[ "$(awk '{print $3}' "/proc/${pid}/stat" 2>/dev/null)" =~ ^[RSDIT]$ ]] && return 0
    done
    return 1
}

munge_works() {
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1
}

start_munge() {
    if munge_works; then
        return
    fi
    install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
    install -d -o munge -g munge -m 0755 /run/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
    runuser -u munge -- munged
    local deadline=$((SECONDS + 10))
    until munge_works; do
        (( SECONDS < deadline )) || die "munged did not start (see /var/log/munge/munged.log)"
        sleep 0.2
    done
}

write_config() {
    if [[ -f "${CONF}" ]] && ! grep -qxF "${MARKER}" "${CONF}"; then
        die "${CONF} exists and was not written by this script; move it away to use the local cluster"
    fi
    local host node_line
    host="$(hostname -s)"
    # slurmd -C reports this machine's real CPU/socket/memory layout in slurm.conf syntax.
    node_line="$(slurmd -C | head -n 1)"
    [[ "${node_line}" == NodeName=* ]] || die "slurmd -C did not describe this node: ${node_line}"
    mkdir -p "${CONF_DIR}"
    cat > "${CONF}" <<EOF
${MARKER}
ClusterName=sml-local
SlurmctldHost=${host}
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
# Finished jobs stay visible to squeue/scontrol for 5 minutes, long enough for submitit to see them end.
MinJobAge=300
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
${node_line} State=UNKNOWN
PartitionName=${PARTITION} Nodes=${host} Default=YES MaxTime=INFINITE State=UP
EOF
}

cluster_up() {
    scontrol ping 2>/dev/null | grep -q 'is UP' || return 1
    local state
    state="$(sinfo -h -p "${PARTITION}" -o '%T' 2>/dev/null | head -n 1)"
    [[ "${state}" == idle* || "${state}" == mixed* || "${state}" == allocated* ]]
}

start() {
    need_root start
    install_packages
    start_munge
    write_config
    mkdir -p "${STATE_DIRS[@]}"
    alive slurmctld || slurmctld
    alive slurmd || slurmd
    local deadline=$((SECONDS + WAIT_S))
    until cluster_up; do
        if (( SECONDS >= deadline )); then
            tail -n 5 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
            die "the cluster did not come up within ${WAIT_S} s (logs above)"
        fi
        # A node that was down when the controller last saw it stays down until resumed.
        scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
        sleep 1
    done
    echo "local Slurm cluster up: partition ${PARTITION}, node $(hostname -s)"
}

stop() {
    need_root stop
    if command -v scancel >/dev/null && scontrol ping 2>/dev/null | grep -q 'is UP'; then
        scancel --full --quiet --user="$(id -un)" || true
    fi
    local daemon
    for daemon in slurmd slurmctld; do
        pkill -x "${daemon}" || true
    done
    pkill -x munged || true
    # The next start must not mistake a daemon that is still shutting down for a running one.
    local deadline=$((SECONDS + 15))
    while alive slurmd || alive slurmctld || alive munged; do
        (( SECONDS < deadline )) || { pkill -9 -x slurmd; pkill -9 -x slurmctld; pkill -9 -x munged; break; } || true
        sleep 0.2
    done
    pkill -9 -x slurmstepd || true
    rm -rf "${STATE_DIRS[@]}"
    if [[ -f "${CONF}" ]] && grep -qxF "${MARKER}" "${CONF}"; then
        rm -f "${CONF}"
    fi
    echo "local Slurm cluster stopped"
}

status() {
    if ! command -v scontrol >/dev/null || [[ ! -f "${CONF}" ]] || ! alive slurmctld; then
        echo "local Slurm cluster is not running (start it with: sudo bash scripts/local_slurm.sh start)"
        return 1
    fi
    scontrol ping 2>&1 || true
    sinfo 2>&1 || true
    squeue 2>&1 || true
    cluster_up
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) die "unknown command '${1:-}'; allowed: start, status, stop" ;;
esac
