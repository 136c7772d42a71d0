#!/usr/bin/env bash
# Fashion-MNIST from Debian's dataset-fashion-mnist package (real data, offline-friendly).
set -euo pipefail
if [ -d /usr/share/datasets/fashion-mnist ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ]; then
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
else
  echo "Fashion-MNIST not found: run 'sudo apt-get install dataset-fashion-mnist' or pass --data-root" >&2
  exit 1
fi
