#!/usr/bin/env bash
# GPU check: the gpu test tier (every sampler and every method, on CUDA), then seconds per epoch
# and per evaluation of LightGCN + RNS and + CNSDiff on Food and Yelp2018, and of the other
# methods (MODELS) on Food, printed as a table that names the card.
#
# Usage (from anywhere; designed to finish within 5 minutes on one H100):
#   benchmarks/gpu_check.sh
#   OODREC_DATA=/path/to/data REPEATS=3 benchmarks/gpu_check.sh
#
# Environment:
#   OODREC_DATA  data directory holding food/ and yelp2018/ (default: ../shared/data relative to
#                the repository root)
#   REPEATS      timed epochs / evaluations per run, after one warm-up epoch (default 5)
#   STEP_TIMEOUT seconds allowed per step before it is killed and reported (default 150)
#   MODELS       methods other than LightGCN timed on Food (default: cdr causaldiff hdrm_backbone
#                invcf advinfonce; empty to skip)
#   PYTHON       interpreter (default python)
#
# Exit status: 0 when every step passed; 2 without CUDA or data; 1 when a step failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python}"
DATA="${OODREC_DATA:-$ROOT/../shared/data}"
REPEATS="${REPEATS:-5}"
STEP_TIMEOUT="${STEP_TIMEOUT:-150}"
MODELS="${MODELS-cdr causaldiff hdrm_backbone invcf advinfonce}"
export OODREC_DATA="$DATA"
OODREC_CLI='import sys; from oodrec.cli import main; sys.exit(main())'  # = the oodrec command

fail() { echo "gpu_check: $*" >&2; exit 2; }

if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    fail "CUDA is not available (torch.cuda.is_available() is False): run this on a GPU machine \
with a CUDA build of torch"
fi
for ds in food yelp2018; do
    [[ -f "$DATA/$ds/train.txt" ]] || fail "no $DATA/$ds/train.txt (set OODREC_DATA)"
done
CARD="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1 || true)"
if [[ -z "$CARD" ]]; then
    CARD="$("$PYTHON" -c 'import torch; print(torch.cuda.get_device_name(0))')"
fi
LOG="$(mktemp -d)"
STATUS=0
echo "gpu_check: card $CARD; data $DATA; logs in $LOG"

echo "== pytest -m gpu"
START=$SECONDS
if ! timeout "$STEP_TIMEOUT" "$PYTHON" -m pytest -m gpu -q -p no:cacheprovider \
        >"$LOG/pytest.txt" 2>&1; then
    echo "FAILED: pytest -m gpu (see $LOG/pytest.txt)"; tail -n 20 "$LOG/pytest.txt"; STATUS=1
fi
PYTEST_LINE="$(tail -n 1 "$LOG/pytest.txt")"
echo "$PYTEST_LINE ($((SECONDS - START)) s)"

ROWS=()
# time DATASET LABEL SPEED-ARGS...: one `oodrec speed` on CUDA, one table row
time_one() {
    local ds="$1" label="$2"; shift 2
    local extra=()
    [[ "$ds" == yelp2018 ]] && extra=(--on-bad-lines skip)  # two malformed lines at its top
    echo "== oodrec speed --dataset $ds $*"
    local out="$LOG/speed-$ds-$label.txt" start=$SECONDS epoch eval_s
    if timeout "$STEP_TIMEOUT" "$PYTHON" -c "$OODREC_CLI" speed --dataset "$ds" \
            --data-dir "$DATA" "$@" --device cuda --repeats "$REPEATS" \
            "${extra[@]}" >"$out" 2>&1; then
        epoch="$(sed -n 's/^epoch seconds: median \([0-9.]*\).*/\1/p' "$out")"
        eval_s="$(sed -n 's/^eval seconds.*median \([0-9.]*\).*/\1/p' "$out")"
    else
        echo "FAILED or timed out after $((SECONDS - start)) s (see $out)"; tail -n 20 "$out"
        epoch="FAILED"; eval_s="FAILED"; STATUS=1
    fi
    ROWS+=("| $ds | $label | ${epoch:-?} | ${eval_s:-?} | $((SECONDS - start)) |")
}
for ds in food yelp2018; do
    for sampler in rns cnsdiff; do
        time_one "$ds" "$sampler" --sampler "$sampler"
    done
done
for model in $MODELS; do
    time_one food "$model" --model "$model"
done

echo
echo "### GPU check on $CARD"
echo
echo "pytest -m gpu: $PYTEST_LINE"
echo
echo "| dataset | method | epoch s (median of $REPEATS) | eval s, val+IID+OOD (median of $REPEATS) | wall s |"
echo "|---|---|--:|--:|--:|"
for row in "${ROWS[@]}"; do echo "$row"; done
exit "$STATUS"
