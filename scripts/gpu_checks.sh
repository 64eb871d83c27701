#!/usr/bin/env bash
# The one prepared run for a CUDA machine, from the repository root:
#
#     bash scripts/gpu_checks.sh            # logs under $OUT (./gpu_out when OUT is unset)
#
# Installs the package offline, prints the GPU and versions, then runs the kernel check and the benchmarks in
# order, each under its own timeout with its output tee'd to $OUT/<name>.log, and ends with each step's exit code
# (124: timed out). A failing step does not stop the next. Every step's timeout is also cut to what is left of a
# shared budget (GPU_CHECKS_BUDGET_S, 480 s), so the whole run stays under about 8 minutes however steps behave.
# Wheels of missing packages may travel in .whl/ (the bench_mfc step needs highspy); they are installed first.
# At most 8 files are written under $OUT (one log per step, and summary.txt with the setup at its top): the device
# tool returns no more.
set -u -o pipefail

cd "$(dirname "$0")/.." || exit 2
OUT="${OUT:-$PWD/gpu_out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
BUDGET_S="${GPU_CHECKS_BUDGET_S:-480}"
START=$SECONDS
export PYTHONUNBUFFERED=1  # a step killed by its timeout still leaves everything it printed in its log
unset TRITON_INTERPRET     # the check must compile the kernels for the GPU, not interpret them

IMPORT_CHECK="import sustainml_kernels.quant_triton, sustainml_kernels.rp_triton, sustainml_exp.compress"

install_package() {
    if [ -n "$(ls .whl/*.whl 2>/dev/null)" ]; then
        # The machine cannot download: carried wheels go to a private folder put first on the path.
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            .whl/*.whl && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
    fi
    # --no-index and no version check: nothing can be fetched there, so pip must not try.
    if timeout 90 "$PY" -m pip install -q --no-deps --no-build-isolation --no-index --disable-pip-version-check \
            -e . && "$PY" -c "$IMPORT_CHECK"; then
        echo "installed: pip install -e ."
        return
    fi
    echo "pip install -e . failed or left the packages unimportable; using PYTHONPATH instead"
    # setup.py maps kernels/ to the import name sustainml_kernels; a link under that name stands in for it.
    local shim
    shim="$(mktemp -d)"
    ln -s "$PWD/kernels" "$shim/sustainml_kernels"
    export PYTHONPATH="$PWD:$shim${PYTHONPATH:+:$PYTHONPATH}"
    "$PY" -c "$IMPORT_CHECK" && echo "importable through PYTHONPATH=$PYTHONPATH"
}

describe_machine() {
    nvidia-smi -L || echo "nvidia-smi: not available"
    "$PY" - <<'EOF'
import platform

import torch

try:
    import triton

    triton_version = triton.__version__
except ImportError:
    triton_version = "not installed"
cuda = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
print(f"python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
      f"triton {triton_version}, {cuda}")
EOF
}

# Brace groups, not pipes: install_package must export PYTHONPATH into this shell, which a pipeline's subshell
# would not; the setup log is shown once it is complete.
{ install_package; describe_machine; } >"$OUT/summary.txt" 2>&1
cat "$OUT/summary.txt"

NAMES=()
CODES=()

step_limit() {  # the step's own cap, cut to what is left of the budget
    local left=$((BUDGET_S - (SECONDS - START)))
    echo $(($1 < left ? $1 : left))
}

run_step() {  # run_step NAME LIMIT_S COMMAND...
    local name=$1 limit=$2
    shift 2
    NAMES+=("$name")
    if [ "$limit" -lt 15 ]; then
        echo "== $name: not run, the ${BUDGET_S}s budget is spent"
        CODES+=("not-run")
        return
    fi
    echo "== $name (timeout ${limit}s): $*"
    local began=$SECONDS
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc after $((SECONDS - began))s"
    CODES+=("$rc")
}

# (1) Triton kernels vs torch references. --max-seconds stops starting checks 25 s before the timeout, so the log
# still ends with its summary line when compilation on a cold Triton cache is slower than expected.
limit=$(step_limit 170)
run_step check_kernels_cuda "$limit" "$PY" scripts/check_kernels_cuda.py --device cuda \
    --max-seconds $((limit > 50 ? limit - 25 : limit / 2))
# (2) Kernel timings: every shape (the 4M-row one shows bandwidth), with shorter do_bench windows than the
# defaults (25 ms warm-up, 100 ms measured), which are longer than these kernels need for a stable median. The
# projection rows compare the fused exact kernel, the fast path (tl.dot fused) and cuBLAS x @ P + the quantize kernel.
run_step bench_kernels "$(step_limit 90)" "$PY" scripts/bench_kernels.py --device cuda --warmup 10 --rep 40
# (3) GNN training speed and memory on the synthetic ogbn-arxiv-sized graph.
run_step bench_gnn "$(step_limit 90)" "$PY" scripts/bench_gnn.py --device cuda --steps 10 --rounds 3
# (4) Contrastive sampler + loss, vectorised vs loop oracle, at its default (MoNuSeg-like) sizes.
run_step bench_csl "$(step_limit 45)" "$PY" scripts/bench_csl.py --device cuda
# (5) Covering benchmark: a synthetic class of 4000 784-dim points (distances on the GPU; the LP/MILP solves
# run on the CPU, so they get short per-solve limits and few bisection steps to fit the budget). It needs highspy,
# which a bare GPU image may lack and cannot download: then the step is skipped, not failed.
if ! "$PY" -c "import highspy" 2>/dev/null; then
    echo "== bench_mfc: skipped, highspy is not installed (carry its wheel in .whl/ to run it)"
    NAMES+=("bench_mfc")
    CODES+=("skipped")
else
    run_step bench_mfc "$(step_limit 45)" "$PY" scripts/bench_mfc.py --device cuda --dataset synthetic --n 4000 \
        --k 50 --time-limit 2 --max-steps 12
fi
# (6) Peak memory of the compressed linear layer's weight-gradient backward at arxiv size.
run_step bench_linear_backward_memory "$(step_limit 45)" "$PY" scripts/bench_linear_backward_memory.py --device cuda
# (7) Registers, spills and instructions per element of every kernel configuration, compiled for sm_90 (needs no
# GPU, so it runs last, on whatever budget is left).
run_step kernel_report "$(step_limit 120)" "$PY" scripts/kernel_report.py --arch 90

failed=0
for code in "${CODES[@]}"; do
    [ "$code" = 0 ] || [ "$code" = skipped ] || failed=1
done
{
    echo "== summary (exit codes; 124 = timed out), $((SECONDS - START))s in all"
    for i in "${!NAMES[@]}"; do
        printf '%-30s %s\n' "${NAMES[$i]}" "${CODES[$i]}"
    done
} | tee -a "$OUT/summary.txt"
exit $failed
