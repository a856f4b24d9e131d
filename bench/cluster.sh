#!/usr/bin/env bash
# 3-node RF=3 cluster on loopback vs a single node measured in the same run:
# PUT throughput at w=one and w=quorum, p99, and peer bytes per replicated
# write (request + reply, headers included) against 1.3 x (key + value + 64).
# Both stay up; each of BENCH_ROUNDS rounds measures the single node and then
# each level for BENCH_SECS, and each ratio is the median of per-round ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
./target/release/hearsay bench --nodes 3 --levels one,quorum --concurrency 64 --keys 100000 --value-size 1024 --duration "${BENCH_SECS:-3}" --rounds "${BENCH_ROUNDS:-5}"
