#!/usr/bin/env bash
# The GPU figures of docs/performance.md ("GPU figures") in one prepared run on a lent card, about 5 minutes on an
# H100-class card: exact importance of InceptionV1 mixed5a on the device path against the CPU (counts compared),
# visualisation image-steps/s against lucent on the same card, open_clip embedding throughput on the card.
#
#   bash benchmarks/gpu_wheels.sh          # here, once: the packages the card's image lacks, as wheels in .whl/
#   bash benchmarks/gpu_checks.sh          # on the card (the device tool: carry .whl); logs under $OUT or /tmp/gpu
#   DEVICE=cpu QUICK=1 bash benchmarks/gpu_checks.sh   # a dry run of the script itself on a CPU machine, tiny sizes
#
# Each benchmark's last line holds its figures; card.txt names the card. Runs with the machine's python3 and its
# PyTorch; autointerp from this checkout (PYTHONPATH), the rest from .whl/ when present.
set -uo pipefail
OUT=${OUT:-/tmp/gpu}
mkdir -p "$OUT"
SITE=/tmp/autointerp_site
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
        || { echo "gpu_checks: installing .whl/ failed" >&2; exit 2; }
fi
export PYTHONPATH="$PWD:$SITE" PYTHONUNBUFFERED=1 AUTOINTERP_OFFLINE=1 HF_HUB_OFFLINE=1
# lucent imports IPython.display only to show images in notebooks: a stand-in where IPython is absent
if ! python3 -c "import IPython.display" 2>/dev/null; then
    mkdir -p "$SITE/IPython"
    : > "$SITE/IPython/__init__.py"
    printf 'def display(*args, **kwargs):\n    pass\n\n\nclass HTML(str):\n    pass\n' > "$SITE/IPython/display.py"
fi
DEVICE=${DEVICE:-cuda}
if [ "${QUICK:-0}" = 1 ]; then  # images, features, cpu features; vis steps, features; clip images, rater features
    SIZES=(32 8 2 2 4 32 8)
else
    SIZES=(2048 832 2 32 32 1024 64)
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda,
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA device')"
} | tee "$OUT/card.txt"
status=0
step() {  # step NAME SECONDS COMMAND...: run it with a limit, keep its log, remember a failure
    local name=$1 limit=$2
    shift 2
    echo "== $name: $*"
    timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
    local rc=${PIPESTATUS[0]}
    [ "$rc" -eq 0 ] || { echo "== $name: exit $rc" | tee -a "$OUT/$name.log"; status=1; }
}
step importance 180 python3 benchmarks/bench_gpu_importance.py --device "$DEVICE" --images "${SIZES[0]}" \
    --features "${SIZES[1]}" --cpu-features "${SIZES[2]}"
step visualize 150 python3 benchmarks/bench_visualize.py --device "$DEVICE" --steps "${SIZES[3]}" \
    --features "${SIZES[4]}" --batch-features "${SIZES[4]}" --lucent-features 2 --trials 2
step embeddings 120 python3 benchmarks/bench_embeddings.py --device "$DEVICE" --clip-images "${SIZES[5]}" \
    --batch-size 256 --features "${SIZES[6]}" --dataset-images 256
echo "== last lines"
for name in importance visualize embeddings; do
    printf '%s: %s\n' "$name" "$(tail -n 1 "$OUT/$name.log" 2>/dev/null)"
done | tee "$OUT/summary.txt"
exit $status
