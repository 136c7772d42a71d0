#!/usr/bin/env bash
# The demo's hybrid/ANN training-time ratio, this checkout against an older commit, side by side:
# `hybridize demo` (ANN, then its has8-finetune hybrid) runs at the given size, alternating
# old, new, old, new, ... one thread each; each run's ratio is the ANN's train img/s over the
# hybrid's from its summary.json, so load drift between runs moves both models of a run alike.
#
#   bash benchmarks/demo_versus.sh [OLD_COMMIT] [ROUNDS] [-- demo options]
#   bash benchmarks/demo_versus.sh 4e773f3 2 -- --img-size 64 --limit-train 960 --limit-eval 200
#
# The old commit is checked out in a temporary git worktree and imported ahead of this
# checkout's editable install (its own CLI, recipes and package); the venv is this checkout's.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
old="${1:-4e773f3}"
rounds="${2:-2}"
shift $(($# < 2 ? $# : 2))
[ "${1:-}" = "--" ] && shift
demo_args=("$@")
[ ${#demo_args[@]} -eq 0 ] && demo_args=(--img-size 64 --limit-train 960 --limit-eval 200)
python="$root/.venv/bin/python"
work="$(mktemp -d)"
cleanup() { git -C "$root" worktree remove --force "$work/old" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT

git -C "$root" worktree add -q --detach "$work/old" "$old"
# the old tree under the import names the editable install maps (hybridize_cli -> cli,
# hybridize.builtin_recipes -> recipes), so nothing of this checkout leaks into the old run
mkdir -p "$work/shim"
ln -s "$work/old/hybridize" "$work/shim/hybridize"
ln -s "$work/old/cli" "$work/shim/hybridize_cli"
[ -e "$work/old/hybridize/builtin_recipes" ] || ln -s "$work/old/recipes" "$work/old/hybridize/builtin_recipes"

ratio() {  # ANN img/s, hybrid img/s and their ratio from a demo's summary.json
  "$python" -c 'import json, sys
s = json.load(open(sys.argv[1]))
a, h = s["ann"]["train_images_per_s"], s["hybrid"]["train_images_per_s"]
print(f"ann {a:.2f} img/s, hybrid {h:.2f} img/s, hybrid/ANN time {a / h:.2f}x")' "$1/summary.json"
}

for round in $(seq 1 "$rounds"); do
  for who in old new; do
    if [ "$who" = old ]; then dir="$work/old"; path="$work/shim"; else dir="$root"; path="$root"; fi
    out="$work/$who-$round"
    (cd "$dir" && OMP_NUM_THREADS=1 PYTHONPATH="$path" "$python" -m hybridize_cli demo \
      "${demo_args[@]}" --out "$out" >"$out.log" 2>&1) || { cat "$out.log" >&2; exit 1; }
    echo "round $round, $who ($( [ "$who" = old ] && echo "$old" || git -C "$root" rev-parse --short HEAD )): $(ratio "$out")"
  done
done
