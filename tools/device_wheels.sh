#!/bin/bash
# Wheels the GPU machine lacks, for a validation call through the device tool: that machine has
# Python 3.12, torch, transformers, pandas, pyarrow, rich, typer and nvidia-ml-py, but no
# pydantic and no python-on-whales, and reaches no package index. The versions are the ones this
# checkout's venv resolved (the newest where it lacks one), so the worker there runs the code
# the tests ran here.
#   bash tools/device_wheels.sh DIR [serve]     # serve: also transformers serve's extras
set -euo pipefail
dir=${1:?usage: device_wheels.sh DIR [serve]}
pin() {  # NAME==VERSION as installed here; NAME alone (the newest) where this venv lacks it
    "${PYTHON:-python3}" -c "import importlib.metadata as m, sys
try: print(sys.argv[1] + '==' + m.version(sys.argv[1]))
except m.PackageNotFoundError: print(sys.argv[1])" "$1"
}
names=(pydantic pydantic_core annotated-types typing-inspection typing_extensions python-on-whales)
if [[ ${2:-} == serve ]]; then
    names+=(fastapi starlette opentelemetry-api annotated-doc uvicorn h11 anyio openai httpx2
        httpcore2 truststore jiter distro sniffio)
fi
pins=()
for name in "${names[@]}"; do pins+=("$(pin "$name")"); done
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
    platforms+=(--platform "$p")
done
"${PYTHON:-python3}" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${platforms[@]}" -d "$dir" "${pins[@]}"
ls "$dir"
