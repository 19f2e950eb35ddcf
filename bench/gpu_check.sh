#!/usr/bin/env bash
# The CUDA path measured in one go (issue: speed of the hardware), within 10 minutes on one GPU
# (about 4 minutes on an H200, the build included).
#
#   bench/gpu_check.sh OUT_DIR          (PYTHON=... to choose the interpreter; default python)
#   GPU_CHECK_DRY=1 bench/gpu_check.sh OUT_DIR   (CPU smoke run of every stage, for the tests)
#
# Stages, each under its own `timeout`, each writing under OUT_DIR:
#   1. build   the native ops with CUDA (SWITCHNERF_BACKEND=native)   -> build.json
#   2. tests   pytest -m cuda -rs                                    -> tests.txt, tests.json
#   3. kernels bench/kernels.py (CPU and CUDA encodings)            -> kernels.json
#   4. step    bench/device_step.py: a training step and a 256x192 render on CUDA, synthetic
#              workload (random rays through an all-occupied grid)  -> device_step.json
#   5. demo    the same on the cpu-demo preset's model                -> device_step_demo.json
#   6. profile bench/cuda_step_profile.py: real training steps on minicity (its dataset in
#              data/minicity, as `make demo` leaves it: synthesizing needs open3d), ms per
#              step against the batch size, kernel launches and host syncs per step
#                                                                   -> cuda_step_profile.json
# summary.json lists every stage's exit status and seconds. Without a CUDA device (or a torch
# built without CUDA) it says so, writes what it could (environment.json) and exits 1; a
# failed stage makes the exit status non-zero too, after the other stages ran.
set -u
OUT=${1:?usage: bench/gpu_check.sh OUT_DIR}
PY=${PYTHON:-python}
DRY=${GPU_CHECK_DRY:-0}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$ROOT" || exit 2
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

"$PY" - "$OUT/environment.json" <<'EOF'
import json, os, platform, sys
import torch
info = {"python": platform.python_version(), "torch": torch.__version__,
        "torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "cpu_count": os.cpu_count(), "host": platform.platform()}
tmp = sys.argv[1] + ".tmp"
open(tmp, "w").write(json.dumps(info, indent=2) + "\n")
os.replace(tmp, sys.argv[1])
print("environment:", info)
EOF

HAVE_CUDA=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
if [ "$HAVE_CUDA" != 1 ] && [ "$DRY" != 1 ]; then
  echo "gpu_check: no CUDA device (or torch without CUDA): nothing measured; see $OUT/environment.json" >&2
  exit 1
fi

DEVICE=cuda
STEP_ARGS=()
KERNEL_ARGS=()
PROFILE_ARGS=()
TEST_FILTER=(-m cuda)
if [ "$DRY" = 1 ]; then
  DEVICE=cpu
  STEP_ARGS=(--quick)
  KERNEL_ARGS=(--quick)
  PROFILE_ARGS=(--rays 256 --warmup 2 --steps 2 --profile-steps 1 --configs configs/cpu-demo.yaml)
  TEST_FILTER=(-m cuda --co)  # collect only: the CUDA tests skip without a GPU anyway
fi

declare -a SUMMARY=()
FAILED=0
stage() {  # stage NAME SECONDS COMMAND...
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  echo "== $name (limit ${limit} s): $*"
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  tail -n 5 "$OUT/$name.log"
  SUMMARY+=("{\"stage\": \"$name\", \"rc\": $rc, \"seconds\": $((SECONDS - t0))}")
  [ "$rc" = 0 ] || FAILED=1
}

export SWITCHNERF_BACKEND=native
stage build 240 "$PY" -c "
import json, os, sys, time
t = time.perf_counter()
from switchnerf.ops import load_native
m = load_native()
info = {'with_cuda': bool(m.with_cuda), 'build_or_load_s': time.perf_counter() - t}
open('$OUT/build.json', 'w').write(json.dumps(info) + '\n')
print(info)
sys.exit(0 if (m.with_cuda or '$DRY' == '1') else 1)"
# Only the modules that hold CUDA tests: a GPU machine without the optional packages
# (viser, nerfacc) cannot import the viewer's test modules, which hold none.
mapfile -t CUDA_TEST_FILES < <(grep -l "pytest.mark.cuda" tests/test_*.py)
stage tests 150 "$PY" -m pytest -q -rs "${TEST_FILTER[@]}" -p no:cacheprovider \
  "${CUDA_TEST_FILES[@]}" --junitxml="$OUT/tests.xml"
stage kernels 90 "$PY" bench/kernels.py --out "$OUT/kernels.json" "${KERNEL_ARGS[@]}"
stage step 60 "$PY" bench/device_step.py --device "$DEVICE" --out "$OUT/device_step.json" \
  "${STEP_ARGS[@]}"
stage demo 45 "$PY" bench/device_step.py --device "$DEVICE" --config configs/cpu-demo.yaml \
  --rays 4096 --out "$OUT/device_step_demo.json" "${STEP_ARGS[@]}"
stage profile 150 "$PY" bench/cuda_step_profile.py --device "$DEVICE" \
  --out "$OUT/cuda_step_profile.json" "${PROFILE_ARGS[@]}"

{
  echo "{\"date\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\", \"dry_run\": $([ "$DRY" = 1 ] && echo true || echo false), \"stages\": ["
  for i in "${!SUMMARY[@]}"; do
    [ "$i" -gt 0 ] && echo ","
    echo "  ${SUMMARY[$i]}"
  done
  echo "]}"
} > "$OUT/summary.json.tmp" && mv "$OUT/summary.json.tmp" "$OUT/summary.json"
echo "gpu_check: figures under $OUT (summary.json)"
exit $FAILED
