#!/usr/bin/env bash
# GPU checks for GpuMonitor (issue 4) on a machine with an NVIDIA GPU; about a minute, at most ~5.
# Run from anywhere: bash bench/gpu_check.sh
#   PYTHON=...      interpreter to use (default python3); a venv is made unless one is active
#   WHEELHOUSE=dir  install offline from the wheels in dir (pip --no-index --find-links)
# Prints nvidia-smi, runs the gpu-marked tests (and the GPU-free ones), then bench/gpu_bench.py.
set -u
cd "$(dirname "$0")/.." || exit 1
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
failed=0

echo "=== nvidia-smi ==="
if command -v nvidia-smi >/dev/null 2>&1; then
    timeout 60 nvidia-smi
    timeout 60 nvidia-smi -L
    timeout 60 nvidia-smi --format=csv,noheader,nounits \
        --query-gpu=index,uuid,name,memory.total,memory.used,utilization.gpu,driver_version
else
    echo "nvidia-smi not found: the gpu-marked tests will skip"
fi

echo "=== python environment ==="
if ! "$PY" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)' 2>/dev/null; then
    venv="${TMPDIR:-/tmp}/shardclient-gpu-venv"
    if "$PY" -m venv --system-site-packages "$venv" >/dev/null 2>&1; then
        PY="$venv/bin/python"
    else
        echo "could not make a venv; installing for $PY"
    fi
fi
"$PY" --version
pip_install() {
    local opts=(-q --disable-pip-version-check --retries 1 --timeout 15)
    [ -n "${WHEELHOUSE:-}" ] && opts+=(--no-index --find-links "$WHEELHOUSE")
    timeout 150 "$PY" -m pip install "${opts[@]}" "$@"
}
tools=(pytest hypothesis anyio pytest-timeout cryptography)  # conftest needs cryptography
if pip_install -e . "${tools[@]}" || pip_install --no-build-isolation -e . "${tools[@]}"; then
    echo "installed the project (editable)"
else
    echo "editable install failed: installing the dependencies, importing from the tree"
    pip_install 'betterproto==2.0.0b7' 'grpclib>=0.4.7,<0.5' 'h2>=4.1,<5' 'anyio>=4.4,<5' \
        'PyYAML>=6,<7' 'nvidia-ml-py>=12' "${tools[@]}"
    export PYTHONPATH="$PWD:$PWD/generated${PYTHONPATH:+:$PYTHONPATH}"
fi
check='import shardclient._gpu, pytest, hypothesis, pynvml; print("nvidia-ml-py", pynvml.__file__)'
if ! "$PY" -c "$check"; then
    echo "the environment is incomplete; stopping"
    exit 1
fi

echo "=== pytest -m gpu (compares with nvidia-smi) ==="
timeout 180 "$PY" -m pytest -m gpu -v -rs -p no:cacheprovider tests/test_gpu*.py || failed=1

echo "=== the GPU-free tests, on this interpreter ==="
timeout 120 "$PY" -m pytest -q -p no:cacheprovider -m "not gpu" tests/test_gpu*.py || failed=1

echo "=== bench/gpu_bench.py ==="
timeout 120 "$PY" bench/gpu_bench.py || failed=1

echo "=== done: $([ $failed = 0 ] && echo all passed || echo SOME FAILED) ==="
exit $failed
