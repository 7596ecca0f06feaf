#!/usr/bin/env bash
# `make images-local`: the CPU worker images with no container registry, and no network inside
# the build either:
#   1. a local Debian base image (scripts/build-base-image.sh: debootstrap + docker import);
#   2. a wheelhouse filled by the HOST's pip, so its index, proxy and CA settings apply (a build
#      container has none of them: behind a TLS-inspecting proxy its pip fails on the
#      certificate): the host's CPU torch, the project with each backend's extra, hatchling;
#   3. `docker compose build` (compose.cpu.yaml added) with pip pointed at that wheelhouse,
#      served on the loopback (builds use the host network), and PIP_NO_INDEX=1.
#
#   PYTHON=.venv/bin/python scripts/build-images-local.sh [BASE_TAG [BACKEND...]]
#   defaults: llenergymeasure-base:bookworm, pytorch vllm. WHEELHOUSE=<dir> (default
#   .whl/images-local) is kept between runs: pip downloads only what is missing.
set -euo pipefail

PY=${PYTHON:-python3}
BASE=${1:-llenergymeasure-base:bookworm}
shift || true
BACKENDS=("$@")
[ ${#BACKENDS[@]} -gt 0 ] || BACKENDS=(pytorch vllm)
REPO=$(cd "$(dirname "$0")/.." && pwd)
WHEELHOUSE=${WHEELHOUSE:-$REPO/.whl/images-local}

say() { printf 'build-images-local: %s\n' "$*" >&2; }

"$REPO/scripts/build-base-image.sh" "$BASE"

torch=$("$PY" -c 'import importlib.metadata as m; print(m.version("torch"))' 2>/dev/null) || {
    say "$PY has no torch: run make setup first (the images get the host's CPU torch)"
    exit 2
}
requirements=("torch==$torch" hatchling)
for backend in "${BACKENDS[@]}"; do  # each CPU image's extra, from the backend descriptors
    extra=$("$PY" -m llenergymeasure.config.descriptor --cpu-extra "$backend") || exit 2
    requirements+=("$REPO[$extra]")
done
mkdir -p "$WHEELHOUSE"
say "filling $WHEELHOUSE with the host's pip (${requirements[*]})"
"$PY" -m pip download --quiet --disable-pip-version-check --dest "$WHEELHOUSE" "${requirements[@]}"

# A fixed port keeps PIP_FIND_LINKS, a build argument, the same from one build to the next, and
# with it the cached dependency layers; another port only when that one is taken.
port=$("$PY" - "${WHEELHOUSE_PORT:-47614}" <<'PORT'
import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
PORT
)
"$PY" -m http.server --bind 127.0.0.1 --directory "$WHEELHOUSE" "$port" >/dev/null 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
for _ in $(seq 50); do
    "$PY" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/')" 2>/dev/null && break
    sleep 0.1
done

fingerprint=$("$PY" -c 'from llenergymeasure.results.schema import schema_fingerprint as f; print(f())')
say "building ${BACKENDS[*]} on $BASE (pip from the wheelhouse only)"
cd "$REPO"
LEM_SCHEMA_FINGERPRINT=$fingerprint docker compose -f compose.yaml -f compose.cpu.yaml build \
    --build-arg "BASE_IMAGE=$BASE" \
    --build-arg "PIP_FIND_LINKS=http://127.0.0.1:$port/" \
    --build-arg PIP_NO_INDEX=1 \
    "${BACKENDS[@]}"
say "built llenergymeasure-<backend>:${LEM_IMAGE_TAG:-latest} for: ${BACKENDS[*]}"
