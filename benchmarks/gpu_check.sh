#!/usr/bin/env bash
# Everything worth doing on a lent GPU, in one go, from a bare machine:
#
#   OUT=/some/dir bash benchmarks/gpu_check.sh
#
# Builds the extension in place, records the environment and the kernels'
# register/shared-memory use, runs the gpu tests of the CUDA and Triton
# kernels, compute-sanitizer (memcheck, racecheck, synccheck, initcheck) over
# benchmarks/sanitize_case.py, and the kernel benchmark at the shapes the
# released heads run (ade, ade-b8, pc59, cityscapes in
# benchmarks/kernel_cases.py). A failing step does not stop the later
# ones; each step's exit code and seconds go to $OUT/steps.txt as it finishes.
# At most 8 files land in $OUT (the device tool brings back no more):
#   steps.txt  build.log  env.txt (machine, versions, build_info, resource usage)
#   gpu_tests.log  sanitizer.log  bench.log  gpu_kernels.json  gpu_kernels.md
#
# Environment:
#   OUT                       where the results go (required)
#   GPU_CHECK_SKIP_BUILD=1    reuse the extension already built in place
#   GPU_CHECK_SKIP_TESTS=1    no pytest
#   GPU_CHECK_SKIP_SANITIZER=1
#   GPU_CHECK_SKIP_BENCH=1
#   GPU_CHECK_SANITIZER_TOOLS default "memcheck racecheck synccheck initcheck"
#   GPU_CHECK_TEST_ARGS       extra pytest arguments, e.g. "-k 'not slow'"
#   GPU_CHECK_BENCH_ARGS      extra run_kernels.py arguments, e.g. "--budget 0.5" or
#                             "--dtype amp-bfloat16,bfloat16,float32"
#   GPU_CHECK_COMMIT          the commit measured, where the tree has no .git
#   CUDA_HOME                 default /usr/local/cuda
#   PYTHON                    default python3
set -uo pipefail

OUT=${OUT:?set OUT to the folder for the results}
cd "$(dirname "$0")/.." || exit 1
mkdir -p "$OUT"
PYTHON=${PYTHON:-python3}
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
export PATH="$PATH:$CUDA_HOME/bin:$CUDA_HOME/compute-sanitizer"
export PYTHONUNBUFFERED=1
STEPS="$OUT/steps.txt"
: >"$STEPS"
FAILED=0

# step NAME COMMAND...: runs COMMAND and appends NAME, its exit code and seconds.
step() {
    local name=$1 start=$SECONDS rc
    shift
    echo "== $name" >&2
    "$@"
    rc=$?
    printf '%-22s rc=%-3d %5ds\n' "$name" "$rc" "$((SECONDS - start))" >>"$STEPS"
    [ "$rc" -eq 0 ] || FAILED=1
    return "$rc"
}

skipped() { printf '%-22s skipped\n' "$1" >>"$STEPS"; }

build() {
    # FORCE_CUDA=1: a build that silently left out the CUDA kernels would
    # only make the CUDA tests skip.
    MAX_JOBS=16 FORCE_CUDA=1 "$PYTHON" -m pip install --no-build-isolation --no-deps -e . \
        >"$OUT/build.log" 2>&1
}

environment() {
    {
        echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "commit: ${GPU_CHECK_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}"
        echo "nvcc: $(nvcc --version 2>/dev/null | tail -n 1)"
        nvidia-smi
        nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
        "$PYTHON" - <<'EOF'
import json
import torch
import condnet.ops as ops

print("python torch", torch.__version__, "cuda", torch.version.cuda)
try:
    import triton
    print("triton", triton.__version__)
except ImportError as exc:
    print("triton missing:", exc)
if torch.cuda.is_available():
    props = torch.cuda.get_device_properties(0)
    print("gpu", props.name, "sm_%d%d" % (props.major, props.minor),
          props.multi_processor_count, "SMs", props.total_memory >> 20, "MiB")
info = ops.build_info()
print("build_info", json.dumps(info, indent=1))
raise SystemExit(0 if "cuda" in info["kernels"]["class_pool"] else 1)
EOF
    } >"$OUT/env.txt" 2>&1
}

resource_usage() {
    local so rc=0
    echo "== cuobjdump --dump-resource-usage" >>"$OUT/env.txt"
    for so in condnet/_C*.so; do
        [ -e "$so" ] || { echo "no condnet/_C*.so" >>"$OUT/env.txt"; return 1; }
        echo "-- $so" >>"$OUT/env.txt"
        cuobjdump --dump-resource-usage "$so" >>"$OUT/env.txt" 2>&1 || rc=$?
    done
    return "$rc"
}

gpu_tests() {
    # eval: GPU_CHECK_TEST_ARGS may hold quoted words (-k 'not slow').
    eval "\"$PYTHON\" -m pytest -m gpu -x -q --durations=15 \
        tests/test_ops_gpu.py tests/test_ops_gpu_classifier.py tests/test_ops_gpu_context.py ${GPU_CHECK_TEST_ARGS:-}" \
        >"$OUT/gpu_tests.log" 2>&1
}

sanitize() {
    local tool=$1
    echo "===== compute-sanitizer --tool $tool =====" >>"$OUT/sanitizer.log"
    # Without the caching allocator each tensor is its own cudaMalloc, so an
    # access past a tensor's end is out of bounds for memcheck, not a read of
    # a neighbour in the same pool block.
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool "$tool" --error-exitcode 1 \
        "$PYTHON" benchmarks/sanitize_case.py >>"$OUT/sanitizer.log" 2>&1
}

bench() {
    # amp-bfloat16 is training as users run it (bf16 features, float32
    # parameters under autocast), at the four named shapes, every op and
    # mode, each row twice (interleaved). A GPU row takes milliseconds, so
    # 0.2 s of timed calls per row is plenty; compiling is most of the time.
    # GPU_CHECK_BENCH_ARGS comes last: a --dtype there replaces this one
    # (pure bfloat16 and float32 beside amp), a --shapes there adds shapes
    # (e.g. "--shapes sweep-k,sweep-n").
    # shellcheck disable=SC2086  # GPU_CHECK_BENCH_ARGS is a list of words
    "$PYTHON" benchmarks/run_kernels.py --device cuda --dtype amp-bfloat16 \
        --shapes ade,ade-b8,pc59,cityscapes --repeat 2 --budget 0.2 \
        --json "$OUT/gpu_kernels.json" --markdown "$OUT/gpu_kernels.md" \
        ${GPU_CHECK_BENCH_ARGS:-} >"$OUT/bench.log" 2>&1
}

if [ "${GPU_CHECK_SKIP_BUILD:-0}" = 1 ]; then skipped build; else step build build; fi
step environment environment
step resource_usage resource_usage

if [ "${GPU_CHECK_SKIP_TESTS:-0}" = 1 ]; then skipped gpu_tests; else step gpu_tests gpu_tests; fi

if [ "${GPU_CHECK_SKIP_SANITIZER:-0}" = 1 ]; then
    skipped sanitizer
elif ! command -v compute-sanitizer >/dev/null; then
    echo "compute-sanitizer not found on PATH or in $CUDA_HOME" >"$OUT/sanitizer.log"
    printf '%-22s rc=127 (not found)\n' sanitizer >>"$STEPS"
    FAILED=1
else
    : >"$OUT/sanitizer.log"
    for tool in ${GPU_CHECK_SANITIZER_TOOLS:-memcheck racecheck synccheck initcheck}; do
        step "sanitizer_$tool" sanitize "$tool"
    done
fi

if [ "${GPU_CHECK_SKIP_BENCH:-0}" = 1 ]; then skipped bench; else step bench bench; fi

echo "all_steps_ok=$((1 - FAILED))" >>"$STEPS"
cat "$STEPS"
exit "$FAILED"
