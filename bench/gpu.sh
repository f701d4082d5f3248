#!/usr/bin/env bash
# Every GPU figure of bench/README.md in one go, on a machine with one CUDA GPU and the project importable:
#     bash bench/gpu.sh LOGDIR [part]     part: all (default), cost, e2e, checks
set -uo pipefail
log=${1:-gpu-logs}
part=${2:-all}
mkdir -p "$log"
export PYTHONUNBUFFERED=1 NOISEKIT_HOME=${NOISEKIT_HOME:-/tmp/noisekit-home}
py=${PYTHON:-python3}
data=${SOP_FAKE:-/tmp/sop-fake}
if [[ $part == all || $part == cost ]]; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$log/nvidia-smi.txt"
    $py -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
    $py bench/prism_cost.py --device cuda --rounds 5 --steps 10 --throughput 300 --compile 2>&1 | tee "$log/prism_cost.txt"
    $py bench/pipeline.py --device cuda --workers 15 --images 1024 2>&1 | tee "$log/pipeline.txt"
fi
if [[ $part == all || $part == e2e ]]; then
    $py bench/train_e2e.py --device cuda --iterations 300 --root "$data" 2>&1 | tee "$log/train_e2e.txt"
fi
if [[ $part == all || $part == checks ]]; then
    [[ -f $data/clean.parquet ]] || $py bench/train_e2e.py --device cuda --iterations 40 --decode workers --root "$data"
    $py bench/train_e2e.py --device cuda --iterations 300 --root "$data" --compile --decode device 2>&1 \
        | tee "$log/train_e2e_compile.txt"
    torchrun --standalone --nproc_per_node 1 -m prism train --dataset "$data/clean.parquet" --device cuda \
        --arch resnet50 --weights random --iterations 100 --val-fraction 0 --select last --workers 15 \
        --decode device --out /tmp/torchrun-run 2>&1 | tee "$log/torchrun.txt"
    $py bench/train_e2e.py --device cuda --precision-check 2>&1 | tee "$log/precision.txt"
fi
