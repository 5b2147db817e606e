#!/usr/bin/env bash
# One command for a GPU machine (issue 27, docs/BENCHMARKS.md "GPU rows"): the CUDA tests (tests/test_cuda.py),
# BasicSR's own tests with and without gsr (identical outcomes), then the GPU rows — gsr's degrader against BasicSR's
# feed_data at GT 128 / 256, the paired SRResNet and RRDB training steps in every precision and memory format, TFD's
# cost, and a paper-scale slice (SRResNet 64x16 baseline and alignment at the papers' batch: images per second and
# loss) — each written to $OUT/<step>.txt, meant to fit in 8 minutes (not yet timed on a GPU).
#
#   on the GPU machine: `make gpu-wheels` here first (and BasicSR's tests into .basicsr/, benchmarks/basicsr_parity.py);
#   then run it with .whl and .basicsr carried:
#       benchmarks/gpu_check.sh
#   rehearsal on the CPU, tiny sizes (tests/test_gpu_check.py):
#       benchmarks/gpu_check.sh --device cpu --quick
#
# Wheels in $WHEELS (default .whl/: what that machine lacks, BasicSR, lmdb, lpips) go into a fresh temporary site
# first; without them the Python at hand must have those packages. Exit status: 0 when every step passed.
set -u -o pipefail
DEVICE=cuda
QUICK=0
while [ $# -gt 0 ]; do
    case $1 in
        --device) DEVICE=$2; shift 2 ;;
        --quick) QUICK=1; shift ;;
        *) echo "gpu_check.sh: unknown argument $1 (use --device cuda|cpu, --quick)" >&2; exit 2 ;;
    esac
done
OUT=${OUT:-$(mktemp -d)}
PYTHON=${PYTHON:-python3}
cd "$(dirname "$0")/.." || exit 2
export PYTHONUNBUFFERED=1 GSR_TEST_DEVICE=$DEVICE PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
WHEELS=${WHEELS:-.whl}
if ls "$WHEELS"/*.whl > /dev/null 2>&1; then
    SITE=$(mktemp -d)
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$WHEELS"/*.whl || exit 2
    export PYTHONPATH="$PYTHONPATH:$SITE"
    echo "installed $(ls "$WHEELS"/*.whl | wc -l) wheels from $WHEELS into $SITE"
fi
"$PYTHON" -c 'import gsr, basicsr, lmdb, lpips' || { echo 'gsr or what it needs does not import' >&2; exit 2; }

status=0
step() {  # step NAME COMMAND...: run it, its output in $OUT/NAME.txt, one line here
    local name=$1 start rc
    shift
    start=$(date +%s)
    "$@" > "$OUT/$name.txt" 2>&1
    rc=$?
    echo "$name: exit $rc in $(( $(date +%s) - start )) s ($*)"
    [ $rc -eq 0 ] || status=1
}

if [ $QUICK = 1 ]; then
    DEGRADE=(--gt-sizes 96 --batch 2 --batches 2 --runs 1)
    STEP=(--archs srresnet --steps 1 --batch 2 --tables execution --settings fp32 channels_last)
    TFD=(--repeats 1 --size 24 32)
    SLICE=(--steps 1 --warmup 1)
    TESTS=(-k 'degrader or half_precision')  # the whole file on the CPU: GSR_TEST_DEVICE=cpu pytest -m cuda
else
    DEGRADE=(--gt-sizes 128 256 --batch 16 --batches 16 --runs 2)
    STEP=(--archs srresnet rrdb --steps 5)
    TFD=(--repeats 5)
    SLICE=(--steps 20 --warmup 5)
    TESTS=()
fi
step tests "$PYTHON" -m pytest -q -m cuda tests/test_cuda.py -p no:cacheprovider -ra "${TESTS[@]}"
step degradation "$PYTHON" benchmarks/degradation_throughput.py --device "$DEVICE" "${DEGRADE[@]}"
step train_step "$PYTHON" benchmarks/train_step.py --device "$DEVICE" "${STEP[@]}"
step tfd_cost "$PYTHON" benchmarks/tfd_cost.py --device "$DEVICE" "${TFD[@]}"
BASICSR_TESTS=${BASICSR_TESTS:-.basicsr/tests}  # BasicSR's tests/ at v1.4.2 (benchmarks/basicsr_parity.py)
if [ -d "$BASICSR_TESTS" ]; then
    step basicsr_parity "$PYTHON" benchmarks/basicsr_parity.py "$BASICSR_TESTS" --out "$(mktemp -d)"
else
    echo "basicsr_parity: skipped ($BASICSR_TESTS is not here: see benchmarks/basicsr_parity.py)"
fi
if [ "$DEVICE" = cuda ]; then  # the paper files' num_gpu: auto, so the slice runs where CUDA is
    step paper_slice bash -c "for f in options/train_srresnet_baseline.yml options/train_srresnet_align.yml; do
        $PYTHON benchmarks/study_step.py \$f --hr embedded:train ${SLICE[*]} || exit 1; done"
fi
echo "outputs in $OUT; exit $status"
exit $status
