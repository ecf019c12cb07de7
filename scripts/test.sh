#!/usr/bin/env bash
# Runs every test: installs prerequisites, builds (release: the interop and Autobahn runs
# need an optimized server), then runs
#   1. the Swift unit, plugin, integration and command-line tests, and the fan-out
#      micro-benchmark as a smoke check,
#   2. interop tests with clients nobody here wrote (Python websockets and msgpack,
#      headless Chromium),
#   3. the Autobahn TestSuite, without compression and with both deflate modes.
# All traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
swift build -c release --build-tests
swift test -c release --skip-build
# Kernel fan-out smoke check (no loss, one encode and one frame per event and variant).
.build/release/FanOutBenchmark --smoke
.build/release/FanOutBenchmark --smoke --variants 2
python3 -m pytest -q -p no:cacheprovider Tests/Interop
scripts/autobahn.sh .build/release/switchboard
