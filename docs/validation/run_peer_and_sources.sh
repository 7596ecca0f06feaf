#!/bin/bash
# One device call (issues 18.4, 17.4): lem vs llenergymeasure==0.7.0 on one small campaign, then
# NVML / Zeus / CodeCarbon over one steady-load window. As run on 2026-12-04 (H200), from a copy
# of the checkout with the wheels in ./whl (pip download --only-binary=:all: --python-version 3.12
# --platform manylinux2014_x86_64 ... llenergymeasure==0.7.0 zeus codecarbon pydantic
# python-on-whales, less numpy/pandas/pyarrow/scipy which the device has):
#   timeout 295 bash docs/validation/run_peer_and_sources.sh        (258 s)
cd "$(dirname "$0")/../.."  # the checkout root, with the carried wheels in ./whl
T0=$(date +%s); left() { echo $(( $1 - ($(date +%s) - T0) )); }
export PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
{
date -u; nvidia-smi --query-gpu=name,driver_version,power.limit,clocks.sm,temperature.gpu --format=csv
python3 -m pip install -q --no-index --find-links whl --no-compile pydantic python-on-whales platformdirs python-dotenv 2>&1 | tail -3
python3 -m pip install -q --no-index --find-links whl --no-compile zeus codecarbon 2>&1 | tail -3
# 0.7.0's package name is ours: its own target dir, on PYTHONPATH only for `llem`.
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/peer whl/llenergymeasure-0.7.0-py3-none-any.whl 2>&1 | tail -3
python3 -c "import torch, transformers, pydantic; print('torch', torch.__version__, 'transformers', transformers.__version__, 'pydantic', pydantic.__version__)"
python3 -c "import zeus, codecarbon; print('zeus', zeus.__version__, 'codecarbon', codecarbon.__version__)"
echo "setup done at $(left 0 | tr -d -) s"
} 2>&1 | tee $OUT/log
# (1) 18.4: lem (this checkout's src) and 0.7.0, same model / prompts / lengths / batch / cycles.
PYTHONPATH=$PWD/src timeout $(left 240) python3 benchmarks/gpu_phases.py --out /tmp/gp --steps after peer \
  --cycles 2 --sampler-hz "[10]" --n-prompts 32 --peer-site /tmp/peer --peer-baseline-s 10 \
  --budget-s $(left 235) 2>&1 | tee -a $OUT/log
echo "step1 rc=${PIPESTATUS[0]} at $(left 0 | tr -d -) s" | tee -a $OUT/log
cp /tmp/gp/summary.json $OUT/campaign_summary.json 2>/dev/null
tar czf $OUT/campaign_dirs.tgz --exclude='*.parquet' --exclude='*.safetensors' -C /tmp/gp after peer after.yaml study.yaml 2>/dev/null
# (2) 17.4: three energy sources over one window.
PYTHONPATH=$PWD/src timeout $(left 283) python3 scripts/validate_energy_sources.py --seconds 10 \
  --warmup-seconds 3 --out $OUT/energy_sources.json 2>&1 | grep -v '^\s*$' | tail -40 | tee -a $OUT/log
echo "step2 rc=${PIPESTATUS[0]} at $(left 0 | tr -d -) s" | tee -a $OUT/log
