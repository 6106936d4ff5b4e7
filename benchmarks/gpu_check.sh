#!/usr/bin/env bash
# GPU check, one call, under ~9 minutes on one card (a lent machine's command limit is 10):
#   1. the gpu test tier (pytest -m gpu: every sampler and every method, on CUDA);
#   2. `oodrec speed` on CUDA: LightGCN + RNS and + CNSDiff on Food and Yelp2018, and the other
#      methods (MODELS) on Food: seconds per epoch and per evaluation;
#   3. the paper grid (PAPER_GRID, part PAPER_ARGS: 81 runs) end to end on one card with
#      `oodrec bench --workers auto`, then `oodrec report`: wall time, runs finished (resumable:
#      a rerun continues), the workers-per-GPU decision;
#   4. benchmarks/scale.py --device cuda: s/epoch, eval s and peak GPU memory per size, up to the
#      largest that fits or that the step's time allows;
# then writes REPORT_DIR/gpu_DATE.md with the card, torch, each step's figures and status.
#
# Usage (from anywhere):
#   benchmarks/gpu_check.sh                       # on a GPU machine
#   benchmarks/gpu_check.sh --dry-run             # CPU only: the same steps, tiny, to a temp dir
#   REPORT_DIR=$OUT OODREC_DATA=/path/to/data benchmarks/gpu_check.sh
#
# --dry-run (or DRY_RUN=1) checks the script's plumbing on a CPU-only machine: no CUDA check,
# every step on the CPU with tiny sizes (the simulator dataset `synthetic`, 1 repeat,
# configs/smoke.yaml instead of the paper grid, one 2,000-interaction scale size, looser time
# limits: BUDGET 900), and the report goes to a temporary directory (printed) unless REPORT_DIR
# is set.
#
# Environment (seconds are each step's time limit; a step gets at most what is left of BUDGET):
#   OODREC_DATA   data directory holding food/ and yelp2018/ (default ../shared/data from the
#                 repository root)
#   REPORT_DIR    where gpu_DATE.md goes (default results/; dry run: a temporary directory)
#   REPEATS       timed epochs per `oodrec speed`, after one warm-up (default 3; dry run 1)
#   MODELS        methods timed on Food (default: cdr causaldiff hdrm_backbone invcf advinfonce)
#   PAPER_GRID    grid of step 3 (default configs/paper.yaml; dry run configs/smoke.yaml)
#   PAPER_ARGS    its part (default: --datasets food,yahoo_r3,yelp2018 --seeds 1,2,3)
#   PAPER_RUNS    run directory of step 3 (default: a temporary one; name one to resume it)
#   SCALE_SIZES   sizes of step 4 in millions (default 0.1,1,3,10)
#   BUDGET        seconds for all steps together (default 530)
#   T_PYTEST T_SPEED T_SPEED_YELP T_MODEL T_PAPER T_REPORT T_SCALE
#                 step limits (default 75, 25, 40, 25, 120, 25, 60: 530 s at worst)
#   PYTHON        interpreter (default python)
#
# Exit status: 0 when every step passed; 2 without CUDA or data (not in a dry run); 1 when a step
# failed or timed out (the report is written either way).
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; }

DRY_RUN="${DRY_RUN:-0}"
for arg in "$@"; do
    case "$arg" in
        --dry-run) DRY_RUN=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "gpu_check: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
    esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python}"
DATA="${OODREC_DATA:-$ROOT/../shared/data}"
export OODREC_DATA="$DATA"
MODELS="${MODELS-cdr causaldiff hdrm_backbone invcf advinfonce}"
PAPER_ARGS="${PAPER_ARGS---datasets food,yahoo_r3,yelp2018 --seeds 1,2,3}"
OODREC=("$PYTHON" -c 'import sys; from oodrec.cli import main; sys.exit(main())')  # = oodrec
LOG="$(mktemp -d)"
TODAY="$(date +%F)"

fail() { echo "gpu_check: $*" >&2; exit 2; }

if [[ "$DRY_RUN" == 1 ]]; then
    DEVICE=cpu
    REPEATS="${REPEATS:-1}"
    REPORT_DIR="${REPORT_DIR:-$LOG/report}"
    PAPER_GRID="${PAPER_GRID:-configs/smoke.yaml}"
    PAPER_ARGS=""
    SPEED_DATASETS=(synthetic)
    MODEL_DATASET=synthetic
    SCALE_SIZES="${SCALE_SIZES:-0.002}"
    SCALE_EXTRA=(--batches 2 --batch-size 256 --threads 1)
    CARD="none (dry run on the CPU: $(nproc) cores)"
    BENCH_SET=(--set train.threads=1)
    # a shared 2-core CPU is slower than the card: looser limits (the plumbing is under test)
    BUDGET="${BUDGET:-900}" T_SPEED="${T_SPEED:-60}" T_MODEL="${T_MODEL:-60}"
    T_PAPER="${T_PAPER:-180}" T_SCALE="${T_SCALE:-120}"
else
    DEVICE=cuda
    REPEATS="${REPEATS:-3}"
    REPORT_DIR="${REPORT_DIR:-$ROOT/results}"
    PAPER_GRID="${PAPER_GRID:-configs/paper.yaml}"
    SPEED_DATASETS=(food yelp2018)
    MODEL_DATASET=food
    SCALE_SIZES="${SCALE_SIZES:-0.1,1,3,10}"
    SCALE_EXTRA=(--batches 5)
    BENCH_SET=()
    if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
        fail "CUDA is not available (torch.cuda.is_available() is False): run this on a GPU \
machine with a CUDA build of torch, or try the plumbing with --dry-run"
    fi
    for ds in food yelp2018; do
        [[ -f "$DATA/$ds/train.txt" ]] || fail "no $DATA/$ds/train.txt (set OODREC_DATA)"
    done
    CARD="$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null \
        | head -n 1 || true)"
    if [[ -z "$CARD" ]]; then
        CARD="$("$PYTHON" -c 'import torch; print(torch.cuda.get_device_name(0))')"
    fi
fi
BUDGET="${BUDGET:-530}"
T_PYTEST="${T_PYTEST:-75}" T_SPEED="${T_SPEED:-25}" T_SPEED_YELP="${T_SPEED_YELP:-40}"
T_MODEL="${T_MODEL:-25}" T_PAPER="${T_PAPER:-120}" T_REPORT="${T_REPORT:-25}"
T_SCALE="${T_SCALE:-60}"
PAPER_RUNS="${PAPER_RUNS:-$LOG/paper_runs}"
read -r -a PAPER_ARGV <<<"$PAPER_ARGS"
TORCH="$("$PYTHON" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)')"
mkdir -p "$REPORT_DIR"
REPORT="$REPORT_DIR/gpu_$TODAY.md"
STATUS=0
T0=$SECONDS
echo "gpu_check: card $CARD; torch $TORCH; data $DATA; logs in $LOG; report $REPORT"

# run_step NAME LIMIT LOGFILE CMD...: run CMD under min(LIMIT, what is left of BUDGET) seconds,
# output to LOGFILE; sets STEP_STATUS (passed, FAILED (exit N), TIMED OUT after N s, skipped)
# and STEP_WALL (seconds).
STEP_STATUS="" STEP_WALL=0
run_step() {
    local name="$1" limit="$2" log="$3"; shift 3
    local left=$((BUDGET - (SECONDS - T0))) start=$SECONDS rc=0
    ((limit > left)) && limit=$left
    echo "== $name (limit ${limit} s)"
    if ((limit < 5)); then
        STEP_STATUS="skipped (budget of $BUDGET s spent)"; STEP_WALL=0
        echo "skipped: budget spent" >"$log"; STATUS=1; echo "   $STEP_STATUS"; return 0
    fi
    timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1 || rc=$?
    STEP_WALL=$((SECONDS - start))
    case "$rc" in
        0) STEP_STATUS="passed" ;;
        124 | 137) STEP_STATUS="TIMED OUT after ${limit} s"; STATUS=1 ;;
        *) STEP_STATUS="FAILED (exit $rc)"; STATUS=1 ;;
    esac
    echo "   $STEP_STATUS in ${STEP_WALL} s (log $log)"
    [[ "$STEP_STATUS" == passed ]] || tail -n 15 "$log" | sed 's/^/   | /'
}

# ---------------------------------------------------------------- 1. the gpu test tier
run_step "pytest -m gpu" "$T_PYTEST" "$LOG/pytest.txt" \
    "$PYTHON" -m pytest -m gpu -q -p no:cacheprovider
PYTEST_STATUS="$STEP_STATUS" PYTEST_WALL=$STEP_WALL
PYTEST_LINE="$(grep -E '(passed|failed|skipped|error|no tests ran)' "$LOG/pytest.txt" \
    | tail -n 1 || true)"

# ---------------------------------------------------------------- 2. oodrec speed
SPEED_ROWS=()
# speed DATASET LABEL LIMIT SPEED-ARGS...: one `oodrec speed`, one table row
speed() {
    local ds="$1" label="$2" limit="$3"; shift 3
    local extra=() out="$LOG/speed-$ds-$label.txt" epoch="" eval_s=""
    [[ "$ds" == yelp2018 ]] && extra=(--on-bad-lines skip)  # two malformed lines at its top
    run_step "oodrec speed --dataset $ds $*" "$limit" "$out" "${OODREC[@]}" speed \
        --dataset "$ds" "$@" --device "$DEVICE" --repeats "$REPEATS" "${extra[@]}"
    if [[ "$STEP_STATUS" == passed ]]; then
        epoch="$(sed -n 's/^epoch seconds: median \([0-9.]*\).*/\1/p' "$out")"
        eval_s="$(sed -n 's/^eval seconds.*median \([0-9.]*\).*/\1/p' "$out")"
    fi
    SPEED_ROWS+=("| $ds | $label | ${epoch:-–} | ${eval_s:-–} | $STEP_WALL | $STEP_STATUS |")
}
for ds in "${SPEED_DATASETS[@]}"; do
    limit=$T_SPEED
    [[ "$ds" == yelp2018 ]] && limit=$T_SPEED_YELP
    for sampler in rns cnsdiff; do
        speed "$ds" "lightgcn + $sampler" "$limit" --sampler "$sampler"
    done
done
for model in $MODELS; do
    speed "$MODEL_DATASET" "$model" "$T_MODEL" --model "$model"
done

# ---------------------------------------------------------------- 3. the paper grid, one card
PLAN="$("${OODREC[@]}" -q bench "$PAPER_GRID" "${PAPER_ARGV[@]}" --out "$PAPER_RUNS" \
    "${BENCH_SET[@]}" --set "train.device=$DEVICE" --dry-run 2>/dev/null | tail -n 1 || true)"
PAPER_TOTAL="$(sed -n 's/^\([0-9]*\) run(s) in .*/\1/p' <<<"$PLAN")"
run_step "oodrec bench $PAPER_GRID --workers auto" "$T_PAPER" "$LOG/paper.txt" \
    "${OODREC[@]}" bench "$PAPER_GRID" "${PAPER_ARGV[@]}" --out "$PAPER_RUNS" \
    --workers auto "${BENCH_SET[@]}" --set "train.device=$DEVICE"
PAPER_STATUS="$STEP_STATUS" PAPER_WALL=$STEP_WALL
PAPER_DONE="$(find "$PAPER_RUNS" -name record.json 2>/dev/null | wc -l | tr -d ' ')"
# the decision lines, out of the progress bar's carriage returns
WORKERS_LINES="$(tr '\r' '\n' <"$LOG/paper.txt" | sed -n 's/.*--workers auto: /  - /p' || true)"
run_step "oodrec report" "$T_REPORT" "$LOG/report.txt" \
    "${OODREC[@]}" -q report "$PAPER_RUNS" --out "$LOG/paper_report" --no-figures
REPORT_STATUS="$STEP_STATUS" REPORT_WALL=$STEP_WALL

# ---------------------------------------------------------------- 4. scale on one device
run_step "benchmarks/scale.py --device $DEVICE" "$T_SCALE" "$LOG/scale.txt" \
    "$PYTHON" benchmarks/scale.py --device "$DEVICE" --sizes "$SCALE_SIZES" --samplers rns \
    --out "$LOG/scale" --data-root "$LOG/scale_data" "${SCALE_EXTRA[@]}"
SCALE_STATUS="$STEP_STATUS" SCALE_WALL=$STEP_WALL

# ---------------------------------------------------------------- the report
{
    echo "# GPU check, $TODAY: $CARD"
    echo
    echo "torch $TORCH, Python $("$PYTHON" -c 'import platform; print(platform.python_version())'),"
    echo "$(nproc) CPU cores; \`benchmarks/gpu_check.sh\`$([[ "$DRY_RUN" == 1 ]] && echo " --dry-run (CPU, tiny sizes: plumbing only, no figures to quote)");"
    echo "$((SECONDS - T0)) s for all steps (budget $BUDGET s)."
    echo
    echo "| step | status | wall s |"
    echo "|---|---|--:|"
    echo "| pytest -m gpu | $PYTEST_STATUS | $PYTEST_WALL |"
    echo "| oodrec speed (${#SPEED_ROWS[@]} runs) | see below | |"
    echo "| oodrec bench $PAPER_GRID --workers auto | $PAPER_STATUS | $PAPER_WALL |"
    echo "| oodrec report | $REPORT_STATUS | $REPORT_WALL |"
    echo "| benchmarks/scale.py --device $DEVICE | $SCALE_STATUS | $SCALE_WALL |"
    echo
    echo "## pytest -m gpu"
    echo
    echo "${PYTEST_LINE:-no summary line (see the log)}"
    echo
    echo "## oodrec speed ($DEVICE, median of $REPEATS timed epochs after a warm-up)"
    echo
    echo "| dataset | method | s/epoch | s/eval (val+IID+OOD) | wall s | status |"
    echo "|---|---|--:|--:|--:|---|"
    for row in "${SPEED_ROWS[@]}"; do echo "$row"; done
    echo
    echo "## $PAPER_GRID ${PAPER_ARGS:+($PAPER_ARGS) }on one device, --workers auto"
    echo
    echo "- status: $PAPER_STATUS after $PAPER_WALL s"
    echo "- runs finished: $PAPER_DONE of ${PAPER_TOTAL:-?} (resumable: PAPER_RUNS=$PAPER_RUNS and"
    echo "  the same call continue the grid)"
    echo "- workers (--workers auto):"
    echo "${WORKERS_LINES:-  - no decision in the log (see $LOG/paper.txt)}"
    echo
    if [[ -f "$LOG/paper_report/runtime.md" ]]; then
        sed 's/^# /### /' "$LOG/paper_report/runtime.md"
    else
        echo "no runtime table (oodrec report: $REPORT_STATUS)"
    fi
    echo
    echo "## benchmarks/scale.py --device $DEVICE (rns; sizes $SCALE_SIZES)"
    echo
    echo "status: $SCALE_STATUS after $SCALE_WALL s"
    echo
    if [[ -f "$LOG/scale/scale.md" ]]; then
        sed 's/^# /### /' "$LOG/scale/scale.md"
    else
        echo "no size measured"
    fi
    grep -h -E 'largest|ran out of GPU memory' "$LOG/scale.txt" 2>/dev/null || true
    echo
    echo "Logs (on the machine that ran it): $LOG"
} >"$REPORT"
echo
cat "$REPORT"
echo
echo "gpu_check: wrote $REPORT (exit $STATUS)"
exit "$STATUS"
