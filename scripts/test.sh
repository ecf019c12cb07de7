#!/usr/bin/env bash
# Runs every test: installs prerequisites, builds, then runs unit, plugin, integration
# and command-line tests (real sockets on 127.0.0.1 only).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
swift build --build-tests
swift test --skip-build
