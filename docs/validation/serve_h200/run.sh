#!/bin/bash
# One server-mode validation on the device: wheels, a random 0.85B Llama, one `lem campaign`.
cd "$(dirname "$0")"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,driver_version,power.limit,persistence_mode,temperature.gpu,power.draw --format=csv
python3 -c "import transformers, fastapi, uvicorn, openai; print('transformers', transformers.__version__)"
python3 make_model.py /tmp/llama-rand || exit 1
mkdir -p /tmp/camp && cp serve.yaml /tmp/camp/
(cd /tmp/camp && timeout 190 python3 -m llenergymeasure.cli campaign serve.yaml --yes)
echo "campaign exit $?"
ps aux | grep -c "[t]ransformers serve" | sed 's/^/transformers serve processes left: /'
d=$(ls -d /tmp/camp/results/serve-h200_*); tar czf $OUT/campaign.tgz -C /tmp/camp/results "$(basename $d)" --exclude='*.safetensors'
cp $d/*/cycle-1/server.log $OUT/ 2>/dev/null; cp $d/*/cycle-1/worker.log $OUT/ 2>/dev/null; true
