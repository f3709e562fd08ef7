#!/bin/bash
# Run the Slurm array recipe (docs/grid-array.sbatch) end to end on the test cluster of
# slurm-up.sh, as users would: `sbatch --array=… docs/grid-array.sbatch INPUT OUT`, then
# check the output directory against a single-process `pgrid grid INPUT -o REF`.
#
#   tools/cluster/test-recipe.sh [SCENARIO ...]     (default: all of them, in this order)
#
# Scenarios (each reported on its own; the run exits 1 when any failed):
#   a-clean           --array=0-2, every task succeeds
#   b-resubmit-one    --array=0-2 with task 1 failing, then task 1 resubmitted: --array=1
#   c-sparse          --array=0-3 with tasks 1 and 3 failing, resubmitted: --array=1,3
#   c-stepped         --array=0-4 with tasks 0, 2, 4 failing, resubmitted: --array=0-4:2
#   d-trailing-slash  --array=0-2 with the output directory given as OUT/
# Each checks the outcome: every task of the final submission COMPLETED with exit 0 and
# ran its own slice (task t of an N-task run is slice t of N, also when resubmitted),
# manifest.json written by the last task, `pgrid index OUT --vds` and `pgrid info OUT`
# exit 0, every input record in a shard or in errors.jsonl, shards equal to the reference.
#
# The jobs run the sbatch file unchanged; tools/cluster/bin/pgrid stands in for pgrid on
# their PATH, to give `pgrid grid` a small --shard-size and to make chosen tasks fail.
# Environment: PGRID (the real pgrid; default .venv/bin/pgrid), PGRID_TEST_SBATCH (the
# sbatch file), PGRID_TEST_SBATCH_ARGS (extra sbatch options), PGRID_TEST_TIMEOUT (seconds
# per array, default 300), PGRID_TEST_SHARD_SIZE (default 25), PGRID_TEST_WORK (default
# $PGRID_SLURM_STATE/test; wiped at start).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$HERE/common.sh"

PGRID=${PGRID:-$ROOT/.venv/bin/pgrid}
PYTHON=${PYTHON:-$(dirname "$PGRID")/python}
SBATCH_FILE=${PGRID_TEST_SBATCH:-$ROOT/docs/grid-array.sbatch}
read -r -a SBATCH_ARGS <<<"${PGRID_TEST_SBATCH_ARGS:-}"
TIMEOUT=${PGRID_TEST_TIMEOUT:-300}
SHARD_SIZE=${PGRID_TEST_SHARD_SIZE:-25}
WORK=${PGRID_TEST_WORK:-$STATE/test}
INPUT=$WORK/input
REF=$WORK/ref
ALL_SCENARIOS=(a-clean b-resubmit-one c-sparse c-stepped d-trailing-slash)

[[ -x $PGRID ]] || die "no pgrid at $PGRID: run 'make install' (or set PGRID)"
[[ -f $SBATCH_FILE ]] || die "no sbatch file $SBATCH_FILE"
sinfo -h >/dev/null 2>&1 || die "the test cluster does not answer (SLURM_CONF=$SLURM_CONF): run tools/cluster/slurm-up.sh"

SCENARIO="" # the scenario being run: the prefix of every PASS/FAIL line
CHECKS_PASSED=0
CHECKS_FAILED=0
pass() { echo "PASS $SCENARIO: $*"; }
fail() { echo "FAIL $SCENARIO: $*"; }
one_line() { tr '\n' ' ' | sed -e 's/  */ /g' -e 's/ $//'; }

# --- the test input and the single-process reference -----------------------------------
# 6 copies of sample_data/drugs.sdf (126 records each), the 100 MOSES molecules and an XYZ
# file with one good and two bad frames: 859 records, 2 of them rejected; with
# --shard-size 25, 35 shards.
setup() {
    SCENARIO=setup
    rm -rf "$WORK"
    mkdir -p "$INPUT"
    local i
    for i in 1 2 3 4 5 6; do
        cp "$ROOT/sample_data/drugs.sdf" "$INPUT/drugs-$i.sdf"
    done
    cp "$ROOT/benchmarks/data/moses100.xyz" "$INPUT/moses100.xyz"
    cat >"$INPUT/bad.xyz" <<'EOF'
3
water
O 0.0 0.0 0.0
H 0.96 0.0 0.0
H -0.24 0.93 0.0
2
unknown element
Xx 0.0 0.0 0.0
H 1.0 0.0 0.0
2
not finite
C nan 0.0 0.0
H 1.0 0.0 0.0
EOF
    # The gridding parameters of docs/grid-array.sbatch, the shard size of the jobs.
    if ! "$PGRID" grid "$INPUT" -o "$REF" --grid-size 32 --sigma 0.5 --channels elements \
        --box fit --shard-size "$SHARD_SIZE" --quiet >"$WORK/ref.log" 2>&1 ||
        ! "$PGRID" index "$REF" --vds >>"$WORK/ref.log" 2>&1; then
        cat "$WORK/ref.log" >&2
        die "the reference run failed"
    fi
    say "input $INPUT ($(find "$INPUT" -type f | wc -l) files), reference $REF ($(find "$REF" -name 'shard-*.h5' | wc -l) shards)"
}

# --- Slurm helpers ---------------------------------------------------------------------
JOB=""
# submit DIR ARRAY OUT [FAIL_TASKS]: sbatch the recipe from DIR (its logs land there);
# sets JOB. Tasks listed in FAIL_TASKS exit 1 before gridding.
submit() {
    local dir=$1 spec=$2 out=$3 fail_tasks=${4:-} msg
    if ! msg=$(cd "$dir" && PATH="$HERE/bin:$(dirname "$PGRID"):$PATH" PGRID_TEST_REAL="$PGRID" \
        PGRID_TEST_SHARD_SIZE="$SHARD_SIZE" PGRID_TEST_FAIL_TASKS="$fail_tasks" \
        sbatch --parsable "${SBATCH_ARGS[@]}" --array="$spec" "$SBATCH_FILE" "$INPUT" "$out" 2>&1); then
        fail "sbatch --array=$spec: $(one_line <<<"$msg")"
        return 1
    fi
    JOB=${msg%%;*}
    say "$SCENARIO: submitted --array=$spec as job $JOB${fail_tasks:+ (tasks $fail_tasks fail on purpose)}"
}

# wait_array JOB: until no task is queued or running (bounded by TIMEOUT; cancels then).
wait_array() {
    local job=$1 deadline=$((SECONDS + TIMEOUT)) q
    while q=$(squeue -h -j "$job" -o '%i %T %r' 2>/dev/null) && [[ -n $q ]]; do
        if grep -qE 'PartitionConfig|BadConstraints|ReqNodeNotAvail' <<<"$q"; then
            scancel "$job" || true
            fail "job $job can never start on this cluster ($(one_line <<<"$q")); $(sinfo -h -o 'node: %c CPUs, %m MB')"
            return 1
        fi
        if ((SECONDS >= deadline)); then
            scancel "$job" || true
            fail "job $job still queued or running after ${TIMEOUT}s: $(one_line <<<"$q")"
            return 1
        fi
        sleep 1
    done
}

# task_states JOB: "TASK STATE EXITCODE" per array task (from slurmctld's memory of the job:
# there is no accounting database, so no sacct; MinJobAge keeps finished jobs for an hour).
task_states() {
    scontrol -o show job "$1" |
        sed -n 's/.* ArrayTaskId=\([^ ]*\) .* JobState=\([^ ]*\) .* ExitCode=\([^ ]*\) .*/\1 \2 \3/p' |
        sort -n
}

# log_tail DIR JOB TASK: the last lines of a task's output, on one line.
log_tail() {
    local log=$1/pgrid-grid-$2_$3.log
    if [[ -s $log ]]; then
        grep -v '^[[:space:]]*$' "$log" | tail -n 3 | one_line
    else
        echo "(no output in $log)"
    fi
}

# expect_tasks DIR JOB "OK TASKS" ["FAILING TASKS"]: each task ended as expected.
expect_tasks() {
    local dir=$1 job=$2 ok=$3 bad=${4:-} states t st ec line
    states=$(task_states "$job")
    for t in $ok; do
        line=$(awk -v t="$t" '$1 == t' <<<"$states")
        read -r _ st ec <<<"$line"
        if [[ ${st:-} == COMPLETED && ${ec:-} == 0:0 ]]; then
            pass "job $job task $t COMPLETED, exit 0"
        else
            fail "job $job task $t ${st:-missing} (ExitCode ${ec:-?}): $(log_tail "$dir" "$job" "$t")"
        fi
    done
    for t in $bad; do
        line=$(awk -v t="$t" '$1 == t' <<<"$states")
        read -r _ st ec <<<"$line"
        if [[ ${st:-} == FAILED ]]; then
            pass "job $job task $t FAILED as arranged"
        else
            fail "job $job task $t ${st:-missing} (ExitCode ${ec:-?}), expected FAILED: $(log_tail "$dir" "$job" "$t")"
        fi
    done
}

# run_array DIR ARRAY OUT "OK TASKS" ["FAILING TASKS"]: submit, wait, check task states.
run_array() {
    local dir=$1 spec=$2 out=$3 ok=$4 bad=${5:-}
    submit "$dir" "$spec" "$out" "${bad// /,}" || return 1
    wait_array "$JOB" || return 1
    expect_tasks "$dir" "$JOB" "$ok" "$bad"
}

# --- checks of a finished output directory ---------------------------------------------
# check_output OUT TASKS N: OUT as given to sbatch; TASKS are the ids of the last
# submission, N the size of the first (the run's number of slices).
check_output() {
    local out=$1 tasks=$2 n=$3 dir t msg slice
    dir=$out
    while [[ $dir == */ ]]; do dir=${dir%/}; done
    if [[ -f $dir/manifest.json ]]; then
        pass "manifest.json written by the last task"
    else
        fail "no manifest.json after the array: the last task did not see a complete run"
    fi
    # Task t of the run is slice t of N, resubmitted or not (its --json summary says which
    # slice it ran): a resubmitted task redoes its own slice, not some other division.
    for t in $tasks; do
        if slice=$("$PYTHON" -c 'import json,sys; print(*json.load(open(sys.argv[1]))["slice"])' \
            "$dir.task-$t.json" 2>/dev/null); then
            if [[ $slice == "$t $n" ]]; then
                pass "task $t ran slice $t of $n ($(basename "$dir").task-$t.json)"
            else
                fail "task $t ran slice ${slice% *} of ${slice#* } ($(basename "$dir").task-$t.json), not slice $t of the run's $n"
            fi
        else
            fail "task $t's summary $dir.task-$t.json is missing, empty or not JSON"
        fi
    done
    local stray
    stray=$(find "$dir" -maxdepth 1 -name '.task-*' 2>/dev/null | head -n 3 | one_line || true)
    if [[ -z $stray ]]; then
        pass "no task summaries inside the output directory"
    else
        fail "task summaries written inside the output directory: $stray"
    fi
    if msg=$("$PGRID" index "$dir" --vds 2>&1); then
        pass "pgrid index OUT --vds: $(one_line <<<"$msg")"
    else
        fail "pgrid index OUT --vds exit $?: $(one_line <<<"$msg")"
    fi
    if msg=$("$PGRID" info "$dir" 2>&1); then
        pass "pgrid info OUT: exit 0"
    else
        fail "pgrid info OUT exit $?: $(tail -n 3 <<<"$msg" | one_line)"
    fi
    local report status=0
    report=$("$PYTHON" "$HERE/check_output.py" "$dir" "$REF" "$INPUT" --label "$SCENARIO" 2>&1) || status=$?
    printf '%s\n' "$report"
    if ((status != 0)) && ! grep -q '^FAIL ' <<<"$report"; then
        fail "check_output.py exit $status: $(tail -n 3 <<<"$report" | one_line)"
    fi
}

# --- scenarios -------------------------------------------------------------------------
scenario_a-clean() {
    local d=$WORK/a-clean
    mkdir -p "$d"
    run_array "$d" 0-2 "$d/out" "0 1 2" || return 0
    check_output "$d/out" "0 1 2" 3
}

scenario_b-resubmit-one() {
    local d=$WORK/b-resubmit-one
    mkdir -p "$d"
    run_array "$d" 0-2 "$d/out" "0 2" "1" || return 0
    run_array "$d" 1 "$d/out" "1" || return 0
    check_output "$d/out" "1" 3
}

scenario_c-sparse() {
    local d=$WORK/c-sparse
    mkdir -p "$d"
    run_array "$d" 0-3 "$d/out" "0 2" "1 3" || return 0
    run_array "$d" 1,3 "$d/out" "1 3" || return 0
    check_output "$d/out" "1 3" 4
}

scenario_c-stepped() {
    local d=$WORK/c-stepped
    mkdir -p "$d"
    run_array "$d" 0-4 "$d/out" "1 3" "0 2 4" || return 0
    run_array "$d" 0-4:2 "$d/out" "0 2 4" || return 0
    check_output "$d/out" "0 2 4" 5
}

scenario_d-trailing-slash() {
    local d=$WORK/d-trailing-slash
    mkdir -p "$d"
    run_array "$d" 0-2 "$d/out/" "0 1 2" || return 0
    check_output "$d/out/" "0 1 2" 3
}

# --- main ------------------------------------------------------------------------------
scenarios=("$@")
((${#scenarios[@]})) || scenarios=("${ALL_SCENARIOS[@]}")
for s in "${scenarios[@]}"; do
    declare -F "scenario_$s" >/dev/null || die "unknown scenario $s (known: ${ALL_SCENARIOS[*]})"
done

started=$SECONDS
setup
results=()
n_ok=0
n_bad=0
for s in "${scenarios[@]}"; do
    echo "=== $s"
    t0=$SECONDS
    log=$WORK/$s.log
    # In a subshell, so that an unexpected error ends this scenario only; its PASS/FAIL
    # lines are counted from its output.
    set +e
    (
        set -e
        SCENARIO=$s
        "scenario_$s"
    ) 2>&1 | tee "$log"
    status=${PIPESTATUS[0]}
    set -e
    n_pass=$(grep -c "^PASS $s: " "$log" || true)
    n_fail=$(grep -c "^FAIL $s: " "$log" || true)
    if ((status != 0)); then
        echo "FAIL $s: the scenario stopped with exit $status (see above)"
        n_fail=$((n_fail + 1))
    fi
    CHECKS_PASSED=$((CHECKS_PASSED + n_pass))
    CHECKS_FAILED=$((CHECKS_FAILED + n_fail))
    if ((n_fail == 0)); then
        results+=("PASS $s ($n_pass checks, $((SECONDS - t0)) s)")
        n_ok=$((n_ok + 1))
    else
        results+=("FAIL $s ($n_fail of $((n_pass + n_fail)) checks failed, $((SECONDS - t0)) s)")
        n_bad=$((n_bad + 1))
    fi
done

echo "=== summary ($CHECKS_PASSED checks passed, $CHECKS_FAILED failed, $((SECONDS - started)) s; work dir $WORK)"
printf '%s\n' "${results[@]}"
echo "scenarios: $n_ok passed, $n_bad failed"
((n_bad == 0))
