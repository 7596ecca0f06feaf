#!/bin/bash
# One device call: issue-20/18 campaign (3 cycles x sampler 0/10 Hz), then the host probe.
# As run on 2026-12-04 (from a copy of the checkout): `bash run_gpu_phases.sh` (call 1), then
# `STEPS=hostprobe BUDGET=100 bash run_gpu_phases.sh` (call 2).
# Wheels: `bash tools/device_wheels.sh .dev-lead/whl` here (an ignored folder), carried, WHL names it.
# Issue 20.3 as its text asks (2 cycles x sampler 0/10 Hz), eager, then with decode as CUDA
# graphs (a static KV cache), one call each:
#   WHL=.dev-lead/whl STEPS=after CYCLES=2 BUDGET=500 bash docs/validation/run_gpu_phases.sh
#   WHL=.dev-lead/whl STEPS=graphs CYCLES=2 BUDGET=500 bash docs/validation/run_gpu_phases.sh
cd "$(dirname "$0")/../.."  # the checkout root, with the carried wheels in ./whl or $WHL
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site ${WHL:-whl}/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
{
date -u; nvidia-smi --query-gpu=name,driver_version,persistence_mode,power.limit,clocks.sm,temperature.gpu --format=csv
nproc; lscpu | grep -E "Model name|Socket|Thread|Core|NUMA|MHz|Hypervisor"; head -1 /proc/stat
cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor 2>&1 | head -1
python3 -c "import torch,transformers,pydantic;print(torch.__version__,transformers.__version__,pydantic.__version__)"
} 2>&1 | tee $OUT/env.txt
timeout ${BUDGET:-380} python3 benchmarks/gpu_phases.py --out /tmp/gp --steps ${STEPS:-after hostprobe} --cycles ${CYCLES:-3} --sampler-hz "[0, 10]" --budget-s $(( ${BUDGET:-380} - 15 )) 2>&1 | tee $OUT/log
echo "rc=${PIPESTATUS[0]}" | tee -a $OUT/log
cp /tmp/gp/summary.json $OUT/ 2>/dev/null
for step in ${STEPS:-after}; do [ -d /tmp/gp/$step ] && tar czf $OUT/$step.tgz --exclude='*.parquet' -C /tmp/gp $step; done
head -1 /proc/stat >> $OUT/env.txt
