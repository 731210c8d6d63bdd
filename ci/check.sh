#!/usr/bin/env bash
# Every check a change must pass: formatting, lints, docs, and the README's test command.
# Run from anywhere: `bash ci/check.sh`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n== %s\n' "$*"; }

step "cargo fmt --all --check"
cargo fmt --all --check

step "cargo clippy --workspace --all-targets --all-features -- -D warnings"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "cargo doc --workspace --no-deps (warnings are errors)"
RUSTDOCFLAGS=-Dwarnings cargo doc --workspace --no-deps

# The README's test command: at the root it covers the workspace's default-members, which
# Cargo.toml keeps equal to every member (the library, cli/ and powercut/).
step "cargo test --all-features"
start=$SECONDS
cargo test --all-features
echo "tests took $((SECONDS - start)) s"

step "all checks passed"
