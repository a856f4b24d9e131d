#!/usr/bin/env bash
# Builds the statically linked binary the image wraps, strips a copy of it
# into target/docker/ (inside the build context), then builds hearsay:latest.
set -euo pipefail
cd "$(dirname "$0")/.."
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --target x86_64-unknown-linux-gnu --bin hearsay
built="${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release/hearsay"
mkdir -p target/docker
strip -o target/docker/hearsay "$built"
docker build -t hearsay:latest .
