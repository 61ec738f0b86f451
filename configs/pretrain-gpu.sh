#!/usr/bin/env bash
# The GPU phase of the shipped weights (configs/pretrain-gpu.yaml) on a lent machine with no
# network, run from the repository root there. The data come as a bundle
# (python -m docemb.train.bundle, tarred), the Python packages that machine lacks as wheels
# (docemb's own among them). The run is sized to the time it has: a short probe measures
# images/s on its second epoch (the first pays for CUDA's and the loader's start), then the run
# gets the steps that fit before DEADLINE seconds after this script started (one cosine
# schedule over EPOCHS epochs, so it ends at learning rate 0).
#   configs/pretrain-gpu.sh BUNDLE.tgz WHEEL_DIR OUT_DIR [DEADLINE=540] [EPOCHS=4] [PROBE_STEPS=60]
set -euo pipefail
bundle=$1 wheels=$2 out=$3 deadline=${4:-540} epochs=${5:-4} probe_steps=${6:-60}
work=/tmp/docemb-gpu
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$wheels"/*.whl
tar xzf "$bundle" -C "$(dirname "$bundle")"
config=$(dirname "$bundle")/pool/config.yaml
# DataLoader workers hand batches over in shared memory; a VM's default /dev/shm can be too small
shm_kb=$(df --output=size -k /dev/shm | tail -1)
if [ "$shm_kb" -lt 8000000 ]; then mount -o remount,size=16G /dev/shm || echo "small /dev/shm: ${shm_kb} kB"; fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi"
python3 -c "import docemb.torchvision_fix, torch, timm, albumentations; print('torch', torch.__version__, 'timm', timm.__version__, 'albumentations', albumentations.__version__, 'cpus', __import__('os').cpu_count())"
train() { python3 -P -m docemb.train --config "$config" --checkpoint-every 0 --no-tensorboard "$@" 2>&1 | tr '\r' '\n' | grep -v '^synth' | awk 'NR % 50 == 1 || !/batch\/s/'; }
train --out $work/probe --epochs 2 --steps-per-epoch "$probe_steps"
rate=$(python3 -c "import csv; print(list(csv.DictReader(open('$work/probe/metrics.csv')))[-1]['images_per_s'])")
batch=$(python3 -c "import yaml; print(yaml.safe_load(open('$config'))['batch_size'])")
seconds=$((deadline - SECONDS - 60))  # the run's own start-up, epoch ends and copying (47 s for v6)
steps_per_epoch=$(python3 -c "print(max(1, int($rate * $seconds / $batch / $epochs)))")
echo "probe: $rate images/s; $seconds s left: $epochs epochs of $steps_per_epoch steps of $batch"
train --out $work/run --epochs "$epochs" --steps-per-epoch "$steps_per_epoch"
mkdir -p "$out"
cp $work/run/model.safetensors $work/run/config.yaml $work/run/metrics.csv $work/run/report.json $work/run/data_report.json "$out"/
cp $work/probe/metrics.csv "$out"/probe-metrics.csv
echo "done in $SECONDS s"
