#!/bin/bash
# Issue 18.4: lem vs llenergymeasure==0.7.0, same campaign, one call. From the checkout root:
#   timeout 570 bash .dev-lead/run_peer.sh   (2026-12-04 18:35 UTC, main at f480660, 400 s)
# wheels in .dev-lead/whl: pydantic 2.14.4 + its needs, python-on-whales, platformdirs,
# python-dotenv, llenergymeasure-0.7.0 (pip download --only-binary=:all: --python-version 3.12)
cd "$(dirname "$0")/../.."  # the checkout root
T0=$(date +%s); left() { echo $(( $1 - ($(date +%s) - T0) )); }
export PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
{
date -u; nvidia-smi --query-gpu=name,driver_version,power.limit,persistence_mode,clocks.sm,temperature.gpu,power.draw --format=csv
lscpu | grep -E "Model name|^CPU\(s\)|Hypervisor"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site $(ls .dev-lead/whl/*.whl | grep -v llenergymeasure-0.7.0) 2>&1 | tail -3
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/peer .dev-lead/whl/llenergymeasure-0.7.0-py3-none-any.whl 2>&1 | tail -3
PYTHONPATH=/tmp/site python3 -c "import torch, transformers, pydantic; print('torch', torch.__version__, 'transformers', transformers.__version__, 'pydantic', pydantic.__version__)"
echo "setup done at $(left 0 | tr -d -) s"
} 2>&1 | tee $OUT/log
PYTHONPATH=/tmp/site:$PWD/src timeout $(left 540) python3 benchmarks/gpu_phases.py --out /tmp/gp --steps after peer \
  --cycles 2 --sampler-hz "[10]" --n-prompts 64 --peer-site /tmp/peer --peer-baseline-s 30 \
  --budget-s $(left 530) 2>&1 | tee -a $OUT/log
echo "rc=${PIPESTATUS[0]} at $(left 0 | tr -d -) s" | tee -a $OUT/log
cp /tmp/gp/summary.json $OUT/peer_compare_summary.json 2>/dev/null
tar czf $OUT/campaign_dirs.tgz --exclude='*.parquet' --exclude='*.safetensors' -C /tmp/gp after peer after.yaml study.yaml 2>/dev/null
