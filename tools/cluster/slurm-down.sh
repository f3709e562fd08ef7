#!/bin/bash
# Stop the test cluster started by slurm-up.sh: cancel its jobs, then stop slurmd,
# slurmctld and munged (by the pids in their pid files). Keeps the state directory (logs).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$HERE/common.sh"

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
stop_daemon slurmd "$STATE/run/slurmd.pid"
stop_daemon slurmctld "$STATE/run/slurmctld.pid"
stop_daemon munged "$STATE/munge/munged.pid"
say "down"
