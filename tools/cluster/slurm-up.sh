#!/bin/bash
# Bring up a single-node Slurm cluster on this machine (localhost, as root, no systemd,
# no cgroups), for `make test-cluster`. Idempotent: daemons already running are kept.
#
#   tools/cluster/slurm-up.sh        # then: export SLURM_CONF=/tmp/pgrid-slurm/slurm.conf
#   tools/cluster/slurm-down.sh
#
# Installs Debian's slurm-wlm and munge when slurmctld is missing. Runs a private munged
# (key, socket, log under $PGRID_SLURM_STATE/munge) as the munge user, then slurmctld and
# slurmd as root with pid and log files under $PGRID_SLURM_STATE, and waits until the
# node is idle.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$HERE/common.sh"

WAIT=${PGRID_SLURM_UP_TIMEOUT:-60}

[[ $(id -u) == 0 ]] || die "run as root (the test cluster runs its daemons as root)"

# --- packages --------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null ||
    ! command -v munged >/dev/null; then
    say "installing slurm-wlm and munge (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq slurm-wlm munge >/dev/null
fi
SLURMCTLD=$(command -v slurmctld)
SLURMD=$(command -v slurmd)
MUNGED=$(command -v munged)

mkdir -p "$STATE"/{ctld,spool,run,log}
chmod 755 "$STATE"

# --- munge -----------------------------------------------------------------------------
# munged should not run as root; it refuses a key that others can read and directories that
# others can write to, and its socket's directory must be searchable by all (0755).
install -d -o munge -g munge -m 0755 "$MUNGE_DIR"
if [[ ! -s $MUNGE_DIR/munge.key ]]; then
    say "creating munge key $MUNGE_DIR/munge.key"
    runuser -u munge -- mungekey --create --keyfile="$MUNGE_DIR/munge.key" --force
fi
chown munge:munge "$MUNGE_DIR/munge.key"
chmod 0400 "$MUNGE_DIR/munge.key"
if [[ -z $(pid_of munged "$MUNGE_DIR/munged.pid") ]]; then
    say "starting munged"
    rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
    runuser -u munge -- "$MUNGED" --socket="$MUNGE_SOCKET" --key-file="$MUNGE_DIR/munge.key" \
        --pid-file="$MUNGE_DIR/munged.pid" --log-file="$MUNGE_DIR/munged.log" \
        --seed-file="$MUNGE_DIR/munged.seed" ||
        {
            tail_log "$MUNGE_DIR/munged.log"
            die "munged did not start"
        }
fi
if ! munge -n -S "$MUNGE_SOCKET" | unmunge -S "$MUNGE_SOCKET" >/dev/null; then
    tail_log "$MUNGE_DIR/munged.log"
    die "munge does not work (munge -n | unmunge via $MUNGE_SOCKET)"
fi

# --- slurm.conf ------------------------------------------------------------------------
# The node line comes from `slurmd -C` (real CPU count, sockets/cores/threads, memory).
NODE_LINE=$("$SLURMD" -C | head -n 1)
[[ $NODE_LINE == NodeName=* ]] || die "unexpected output of slurmd -C: $NODE_LINE"
HOST=${NODE_LINE#NodeName=}
HOST=${HOST%% *}
conf_new=$(sed -e "s|@STATE@|$STATE|g" -e "s|@HOST@|$HOST|g" \
    -e "s|@CTLD_PORT@|$CTLD_PORT|g" -e "s|@SLURMD_PORT@|$SLURMD_PORT|g" \
    -e "s|@NODE_LINE@|$NODE_LINE|g" "$HERE/slurm.conf.in")
restart=0
if [[ ! -f $SLURM_CONF ]] || [[ $(cat "$SLURM_CONF") != "$conf_new" ]]; then
    say "writing $SLURM_CONF"
    printf '%s\n' "$conf_new" >"$SLURM_CONF"
    restart=1
fi

if ((restart)); then # slurm.conf changed: restart the daemons with it
    stop_daemon slurmd "$STATE/run/slurmd.pid"
    stop_daemon slurmctld "$STATE/run/slurmctld.pid"
fi

# --- daemons ---------------------------------------------------------------------------
# Both fork into the background and write their pid files (paths in slurm.conf).
if [[ -z $(pid_of slurmctld "$STATE/run/slurmctld.pid") ]]; then
    say "starting slurmctld"
    "$SLURMCTLD" -f "$SLURM_CONF" || {
        tail_log "$STATE/log/slurmctld.log"
        die "slurmctld did not start"
    }
fi
if [[ -z $(pid_of slurmd "$STATE/run/slurmd.pid") ]]; then
    say "starting slurmd"
    "$SLURMD" -f "$SLURM_CONF" || {
        tail_log "$STATE/log/slurmd.log"
        die "slurmd did not start"
    }
fi

# --- wait for the node -----------------------------------------------------------------
node_state=""
for ((i = 0; i < WAIT * 2; i++)); do
    node_state=$(sinfo -h -N -n "$HOST" -o '%T' 2>/dev/null | head -n 1) || node_state=""
    case $node_state in
    idle | mixed | allocated | completing) break ;;
    drained | draining | drain*)
        # Left drained by an earlier run (e.g. a changed node definition): put it back.
        scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true
        ;;
    esac
    sleep 0.5
done
case $node_state in
idle | mixed | allocated | completing) ;;
*)
    say "node $HOST is '${node_state:-not reported}' after ${WAIT}s (sinfo; scontrol show node):"
    sinfo >&2 || true
    scontrol show node "$HOST" >&2 || true
    tail_log "$STATE/log/slurmctld.log"
    tail_log "$STATE/log/slurmd.log"
    die "the test cluster did not come up"
    ;;
esac
say "up: node $HOST $node_state; export SLURM_CONF=$SLURM_CONF"
sinfo -N -o '%N %T %c %m %P' >&2
