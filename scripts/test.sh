#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit, integration, crash, corruption and property
# tests. It installs what the tests need on a fresh Debian machine with the Rust toolchain.
# Usage: scripts/test.sh            (CI runs exactly this through .ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }

# Tools the tests call besides the lifeboat binary: sha256sum and sleep (coreutils), gcc
# for the bundled SQLite build. Install whatever is missing (root on CI; sudo elsewhere).
missing=()
need cc || missing+=(gcc)
need sha256sum || missing+=(coreutils)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt clippy || true

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings
echo "== cargo test"
cargo test --all-targets
