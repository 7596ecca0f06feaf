set -x
pip install -q --no-deps --target /tmp/site .whl/*.whl 2>&1 | tail -2
export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,driver_version,persistence_mode,power.limit,temperature.gpu --format=csv
python -c "import torch,transformers,importlib.util as u;print(torch.__version__,transformers.__version__,'flash_attn',u.find_spec('flash_attn') is not None,'bnb',u.find_spec('bitsandbytes') is not None,'accelerate',u.find_spec('accelerate') is not None)"
timeout 480 python -m pytest tests/gpu -v -rs -p no:cacheprovider 2>&1
