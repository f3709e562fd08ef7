#!/bin/bash
# Stop the test cluster started by slurm-up.sh: cancel its jobs, then stop slurmd,
# slurmctld and munged (by the pids in their pid files). Keeps the state directory (logs).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$HERE/common.sh"

stop() { # NAME PIDFILE
    local pid i
    pid=$(pid_of "$1" "$2")
    [[ -n $pid ]] || return 0
    say "stopping $1 ($pid)"
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        [[ -n $(pid_of "$1" "$2") ]] || return 0
        sleep 0.2
    done
    say "$1 ($pid) still running after 10 s: SIGKILL"
    kill -9 "$pid" 2>/dev/null || true
}

if [[ -n $(pid_of slurmctld "$STATE/run/slurmctld.pid") ]]; then
    jobs=$(squeue -h -o '%A' 2>/dev/null | sort -u | tr '\n' ' ') || jobs=""
    if [[ -n ${jobs// /} ]]; then
        say "cancelling jobs: $jobs"
        # shellcheck disable=SC2086
        scancel $jobs 2>/dev/null || true
        for ((i = 0; i < 30; i++)); do
            [[ -z $(squeue -h -o '%A' 2>/dev/null) ]] && break
            sleep 0.5
        done
    fi
fi
stop slurmd "$STATE/run/slurmd.pid"
stop slurmctld "$STATE/run/slurmctld.pid"
stop munged "$STATE/munge/munged.pid"
say "down"
