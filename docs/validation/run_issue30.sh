#!/bin/bash
# Issue 30, points 2 and 4: two bounded device calls from a copy of the checkout holding src/,
# benchmarks/, tools/, this script and whl/ (tools/device_wheels.sh DIR, plus
# llenergymeasure==0.7.0, platformdirs and python-dotenv, pip download --only-binary=:all:
# --python-version 3.12 --no-deps). As run on 2026-12-08, both calls on an H100:
#   call 1 (01:10 UTC, before the reused static cache): cd .gpu && STEPS=graphs timeout 585 bash docs/validation/run_issue30.sh
#   call 2 (01:34 UTC): cd .gpu && STEPS="graphs after peer" PEER_CYCLES=1 BUDGET=525 timeout 545 bash docs/validation/run_issue30.sh
# graphs: the 64-prompt campaign with `pytorch: {decode: cuda_graphs}`, 3 cycles x sampler
# 0 / 10 Hz; after: the same campaign eager; peer: llenergymeasure 0.7.0 on the same workload,
# PEER_CYCLES cycles (what fits the call after both arms).
cd "$(dirname "$0")/../.."
T0=$(date +%s); left() { echo $(( $1 - ($(date +%s) - T0) )); }
export PIP_DISABLE_PIP_VERSION_CHECK=1 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
export TORCH_LOGS=${TORCH_LOGS:-recompiles}
BUDGET=${BUDGET:-555}
{
date -u; nvidia-smi --query-gpu=name,driver_version,power.limit,persistence_mode,clocks.sm,temperature.gpu,power.draw --format=csv
lscpu | grep -E "Model name|^CPU\(s\)|Hypervisor"; head -1 /proc/stat
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site $(ls whl/*.whl | grep -v llenergymeasure-0.7.0) 2>&1 | tail -3
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/peer whl/llenergymeasure-0.7.0-py3-none-any.whl 2>&1 | tail -3
PYTHONPATH=/tmp/site python3 -c "import torch, transformers, pydantic; print('torch', torch.__version__, 'transformers', transformers.__version__, 'pydantic', pydantic.__version__)"
echo "setup done at $(left 0 | tr -d -) s"
} 2>&1 | tee $OUT/log
PYTHONPATH=/tmp/site:$PWD/src timeout $(left $BUDGET) python3 benchmarks/gpu_phases.py --out /tmp/gp \
  --steps $STEPS --cycles 3 --sampler-hz "[0, 10]" --n-prompts 64 --peer-site /tmp/peer \
  --peer-cycles ${PEER_CYCLES:-2} --peer-baseline-s 30 --budget-s $(left $((BUDGET - 15))) 2>&1 | tee -a $OUT/log
echo "rc=${PIPESTATUS[0]} at $(left 0 | tr -d -) s" | tee -a $OUT/log
head -1 /proc/stat >> $OUT/log; nvidia-smi --query-gpu=temperature.gpu,power.draw --format=csv >> $OUT/log
cp /tmp/gp/summary.json $OUT/summary.json
find /tmp/gp -name '*.log' -size +512k -exec sh -c 'tail -c 512000 "$1" > "$1.t" && mv "$1.t" "$1"' _ {} \;
tar czf $OUT/campaigns.tgz --exclude='*.parquet' --exclude='*.safetensors' -C /tmp/gp $(cd /tmp/gp && ls -d after graphs peer *.yaml 2>/dev/null)
cd /tmp/gp && tar czf $OUT/results.tgz $(find . -name "result.json" -o -name "results.csv" -o -name "*.yaml") && du -ah /tmp/gp | sort -h | tail -5 >> $OUT/log
