# shellcheck shell=bash disable=SC2034  # the variables are used by the scripts that source this
# Shared by slurm-up.sh, slurm-down.sh and test-recipe.sh (sourced, not run).
#
#   PGRID_SLURM_STATE  state directory of the test cluster (default /tmp/pgrid-slurm):
#                      slurm.conf, munge key and socket, pid and log files, spool.
#   PGRID_SLURM_CTLD_PORT / PGRID_SLURM_SLURMD_PORT   ports (default 6817 / 6818).

STATE=${PGRID_SLURM_STATE:-/tmp/pgrid-slurm}
CTLD_PORT=${PGRID_SLURM_CTLD_PORT:-6817}
SLURMD_PORT=${PGRID_SLURM_SLURMD_PORT:-6818}
MUNGE_DIR=$STATE/munge
MUNGE_SOCKET=$MUNGE_DIR/munge.socket.2
export SLURM_CONF=$STATE/slurm.conf

say() { printf '[cluster] %s\n' "$*" >&2; }
die() {
    say "ERROR: $*"
    exit 1
}

# pid_of NAME PIDFILE: the pid in PIDFILE if that process is alive and is NAME, else nothing.
pid_of() {
    local name=$1 pidfile=$2 pid comm
    [[ -s $pidfile ]] || return 0
    pid=$(tr -dc '0-9' 2>/dev/null <"$pidfile") || return 0
    [[ -n $pid ]] || return 0
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 0
    [[ $comm == "$name" ]] && alive "$pid" && echo "$pid"
    return 0
}

# tail_log FILE: the last lines of a log, for error messages.
tail_log() {
    if [[ -f $1 ]]; then
        say "--- last lines of $1:"
        tail -n 25 "$1" >&2
    else
        say "--- $1 does not exist"
    fi
}

# alive PID: the process exists and is not a zombie.
alive() {
    local st
    st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n $st && $st != Z ]]
}

# stop_daemon NAME PIDFILE: SIGTERM, wait up to 10 s for the process itself to end (the
# daemons remove their pid files before they are gone), then SIGKILL.
stop_daemon() {
    local pid i
    pid=$(pid_of "$1" "$2")
    [[ -n $pid ]] || return 0
    say "stopping $1 ($pid)"
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        alive "$pid" || return 0
        sleep 0.2
    done
    say "$1 ($pid) still running after 10 s: SIGKILL"
    kill -9 "$pid" 2>/dev/null || true
    for ((i = 0; i < 25; i++)); do
        alive "$pid" || return 0
        sleep 0.2
    done
    die "$1 ($pid) did not stop"
}
