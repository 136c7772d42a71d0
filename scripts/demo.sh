#!/usr/bin/env bash
# The main job on the embedded default: pretrained EfficientNet-Lite0 -> has8-finetune hybrid ->
# fine-tune and evaluate on Fashion-MNIST, offline, on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
case " $* " in
  *" --data-root "* | *" --data-root="*) ;;  # the data comes from that folder
  *) bash scripts/fetch_data.sh || echo "note: continuing; the demo looks in its cache next" >&2 ;;
esac
exec .venv/bin/hybridize demo "$@"
