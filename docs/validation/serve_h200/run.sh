#!/bin/bash
# Issue 15.6: one server-mode campaign on the H200 through the PyTorch server path. As run on
# 2026-12-04 18:58 UTC (main at 9a7658b) from the checkout root, as .dev-lead/run_serve2.sh:
#   timeout 290 bash .dev-lead/run_serve2.sh
# with these wheels in .dev-lead/whl (pip download --only-binary=:all: --python-version 3.12):
# pydantic 2.14.4, pydantic-core 2.50.5, annotated-types, typing-inspection, typing-extensions,
# python-on-whales, fastapi 0.165.0, starlette, opentelemetry-api, annotated-doc, uvicorn 0.55.0,
# h11, anyio, openai 3.60.0, httpx2, httpcore2, truststore, jiter, distro, sniffio.
cd "$(dirname "$0")/../../.."  # the checkout root
T0=$(date +%s); left() { echo $(( $1 - ($(date +%s) - T0) )); }
export PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site $(ls .dev-lead/whl/*.whl | grep -v llenergymeasure-0.7.0) 2>&1 | tail -3
export PYTHONPATH=/tmp/site:$PWD/src
{
date -u; git log --oneline -1 2>/dev/null
nvidia-smi --query-gpu=name,driver_version,power.limit,persistence_mode,temperature.gpu,power.draw --format=csv
python3 -c "import transformers, fastapi, uvicorn, openai; print(transformers.__version__)" || exit 1
python3 docs/validation/serve_h200/make_model.py /tmp/llama-rand || exit 1
rm -rf /tmp/camp; mkdir -p /tmp/camp && cp docs/validation/serve_h200/serve.yaml /tmp/camp/
(cd /tmp/camp && timeout 230 python3 -m llenergymeasure.cli campaign serve.yaml --yes)
echo "campaign exit $? at $(left 0 | tr -d -) s"
echo "transformers serve processes left: $(pgrep -fc 'transformers serve')"
echo "listening sockets of python left: $(ss -ltnp 2>/dev/null | grep -c python)"
d=$(ls -td /tmp/camp/results/serve-h200_* | head -1); tar czf $OUT/serve_campaign.tgz --exclude="*.safetensors" -C /tmp/camp/results "$(basename $d)"
} 2>&1 | tee $OUT/log
