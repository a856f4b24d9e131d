#!/usr/bin/env bash
# Single-node throughput as a ratio of the no-op ceiling (GET /health) measured
# in the same run: PUT/GET with --sync=periodic, then PUT with --sync=always.
# 1 KiB values, 64 connections, 100k keys. Loopback only; each phase is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${BENCH_SECS:-10}
cargo build --release --quiet
echo "## --sync=periodic"
./target/release/hearsay bench --workloads noop,put,get --concurrency 64 --keys 100000 --value-size 1024 --duration "$secs" --sync periodic
echo "## --sync=always"
./target/release/hearsay bench --workloads noop,put --concurrency 64 --keys 100000 --value-size 1024 --duration "$secs" --sync always
