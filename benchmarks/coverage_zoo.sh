#!/usr/bin/env bash
# The whole-zoo coverage run (benchmarks/coverage.py, every stage, export included), shard by
# shard in an evenly spread order: stopped anywhere, the records so far are an even sample of
# the zoo, and a rerun resumes where it stopped (coverage.py skips recorded models). The
# records are committed (benchmarks/records/coverage.jsonl) so that the run spans sessions.
# After the first two shards come the six that make up `--shard 0/3` (0, 9, 3, 12, 6, 15 of
# 18), the third of the zoo that docs/coverage.md's first run measured and issue 9's gradient
# bound names, so that the third is complete first.
#
#   JOBS=2 bash benchmarks/coverage_zoo.sh [OUT]   # PYTHON=... to use another interpreter
#   .venv/bin/python benchmarks/coverage.py --summarise benchmarks/records/coverage.jsonl
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/benchmarks/records/coverage.jsonl}"
for k in 1 10 0 9 3 12 6 15 5 14 7 16 2 11 4 13 8 17; do
  OMP_NUM_THREADS=1 "${PYTHON:-$root/.venv/bin/python}" "$root/benchmarks/coverage.py" --shard "$k/18" \
    --jobs "${JOBS:-1}" --timeout "${TIMEOUT:-900}" --out "$out"
done
