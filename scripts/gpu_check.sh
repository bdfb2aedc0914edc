#!/usr/bin/env bash
# The GPU checks, for one machine with a CUDA GPU and no network: under 8 minutes on one H100/H200
# without the compiled benchmark, which was added later and is not yet timed on a GPU.
#
#   bash scripts/gpu_check.sh            # from the repository root
#
# 1. installs bitsandbytes from a wheel placed beside the checkout (../bitsandbytes-*.whl) or at
#    $BNB_WHEEL. The machine has no network, so fetch the wheel beforehand on one that has:
#      pip download bitsandbytes==0.50.2 --only-binary=:all: --python-version 3.12 \
#          --platform manylinux_2_24_x86_64 --no-deps -d DIR
#    (match --python-version to the GPU machine's python). transformers and peft, which only the
#    reference side of the benchmark needs, come from $WHEELS_DIR (default ../wheels) when they
#    are not installed; without them the benchmark runs our stack alone.
# 2. installs this project without dependencies (torch must already be there);
# 3. runs the tests marked `cuda`;
# 4. writes one random Qwen3-4B checkpoint and benchmarks NF4 + LoRA on it, ours against
#    transformers + peft + bitsandbytes, with activation checkpointing (the trainer's CUDA
#    default) and without, then with checkpointing and torch.compile in both stacks (last: the
#    compilation is the slowest part), printing a table for each.
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WHEELS_DIR=${WHEELS_DIR:-../wheels}

step() { printf '\n== %s\n' "$*"; }
has_module() { "$PYTHON" -c "import $1" 2>/dev/null; }

step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "nvidia-smi not found"
"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'; \
print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"

step "bitsandbytes from a local wheel"
wheel=${BNB_WHEEL:-$(ls ../bitsandbytes-*.whl 2>/dev/null | tail -n 1 || true)}
if [[ -n "$wheel" ]]; then
    timeout 120 "$PYTHON" -m pip install --no-index --no-deps --quiet "$wheel"
elif has_module bitsandbytes; then
    echo "no wheel found; using the installed bitsandbytes"
else
    echo "no bitsandbytes wheel at ../bitsandbytes-*.whl or \$BNB_WHEEL, and none installed" >&2
    exit 1
fi
"$PYTHON" -c "import bitsandbytes; print('bitsandbytes', bitsandbytes.__version__)"

step "this project, without dependencies"
# The checkout also goes on PYTHONPATH, so an image whose setuptools cannot build it still runs it.
timeout 120 "$PYTHON" -m pip install --no-index --no-deps --no-build-isolation --quiet -e . \
    || echo "pip could not install the project; running it from the checkout"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

stack=both
if ! has_module transformers || ! has_module peft; then
    if [[ -d "$WHEELS_DIR" ]]; then
        timeout 120 "$PYTHON" -m pip install --no-index --find-links "$WHEELS_DIR" --quiet transformers peft \
            || echo "could not install transformers/peft from $WHEELS_DIR"
    fi
    if ! has_module transformers || ! has_module peft; then
        echo "transformers or peft missing: benchmarking our stack only"
        stack=ours
    fi
fi

step "tests marked cuda"
set +e
timeout 180 "$PYTHON" -m pytest -q -m cuda -p no:cacheprovider
status=$?
set -e
if [[ $status -ne 0 ]]; then
    echo "pytest -m cuda failed with exit code $status" >&2
    exit "$status"
fi

step "a random Qwen3-4B checkpoint (8 GB of bf16) that both stacks load"
checkpoint=$(mktemp -d)
trap 'rm -rf "$checkpoint"' EXIT
timeout 240 "$PYTHON" scripts/make_random_checkpoint.py --shape 4b --device cuda "$checkpoint"

for options in "--grad-checkpoint --no-compile" "--no-grad-checkpoint --no-compile" "--grad-checkpoint --compile"; do
    step "benchmark: random Qwen3-4B, NF4 + LoRA r16, batch 1 x 2048, bfloat16, $options ($stack)"
    # shellcheck disable=SC2086  # $options is two options
    timeout 300 "$PYTHON" scripts/bench.py --shape 4b --checkpoint "$checkpoint" --seq-len 2048 --batch-size 1 \
        --device cuda --dtype bfloat16 --quant nf4 --stack "$stack" $options
done
