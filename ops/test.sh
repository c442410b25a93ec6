#!/usr/bin/env bash
# Runs every test of the dataserver on a fresh machine: installs what the tests need, builds
# once, then runs all test binaries in parallel with cargo-nextest.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo nextest --version >/dev/null 2>&1; then
    echo "installing cargo-nextest (test runner)"
    cargo install cargo-nextest --locked
fi

# Doc tests first: nextest does not run them, and its summary should be the last word.
cargo test --workspace --doc --locked
cargo nextest run --workspace --locked --no-fail-fast "$@"
