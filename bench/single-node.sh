#!/usr/bin/env bash
# Single-node throughput as a ratio of the no-op ceiling (GET /health) measured
# in the same run: PUT/GET with --sync=periodic, then PUT with --sync=always,
# then what the storage engine alone costs per PUT and GET (benches/storage.rs).
# 1 KiB values, 64 connections, 100k keys. Loopback only; each phase is bounded.
# Workloads alternate for BENCH_ROUNDS rounds of BENCH_SECS each, and each
# ratio is the median of per-round ratios (min-max alongside).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${BENCH_SECS:-3}
rounds=${BENCH_ROUNDS:-5}
cargo build --release --quiet
echo "## --sync=periodic"
./target/release/hearsay bench --workloads noop,put,get --concurrency 64 --keys 100000 --value-size 1024 --duration "$secs" --rounds "$rounds" --sync periodic
echo "## --sync=always"
./target/release/hearsay bench --workloads noop,put --concurrency 64 --keys 100000 --value-size 1024 --duration "$secs" --rounds "$rounds" --sync always
echo "## the storage engine alone (no HTTP): sled against the in-memory engine"
cargo bench --quiet --bench storage
