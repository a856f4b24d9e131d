#!/usr/bin/env bash
# Builds the statically linked binary the image wraps, strips a copy of it
# into target/docker/, then builds the image hearsay:latest.
set -euo pipefail
cd "$(dirname "$0")/.."
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --target x86_64-unknown-linux-gnu --bin hearsay
mkdir -p target/docker
strip -o target/docker/hearsay target/x86_64-unknown-linux-gnu/release/hearsay
docker build -t hearsay:latest .
