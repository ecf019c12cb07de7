#!/usr/bin/env bash
# Runs every test: installs prerequisites, builds (release: the interop and Autobahn runs
# need an optimized server), then runs
#   1. the Swift unit, plugin, integration and command-line tests, the fan-out
#      micro-benchmark and the load harness (Benchmarks/bench.py) as smoke checks, and the
#      allocation budgets (Benchmarks/Allocations),
#   2. every fuzz target: its seeds and regressions replayed, then 20 s of libFuzzer each,
#   3. interop tests with clients nobody here wrote (Python websockets and msgpack,
#      headless Chromium) and hostile clients on real sockets,
#   4. the short soak and chaos run (Benchmarks/soak.py --short),
#   5. the Autobahn TestSuite, without compression and with both deflate modes,
#   6. the plugin scaffold: `switchboard new-plugin` writes a source, a filter and an encoder
#      that build, pass the contract kit and serve a client (scripts/scaffold-check.sh).
# All traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
swift build -c release --build-tests
swift test -c release --skip-build
# Kernel fan-out smoke check (no loss, one encode and one frame per event and variant).
.build/release/FanOutBenchmark --smoke
.build/release/FanOutBenchmark --smoke --variants 2
# Allocation budgets (counted mallocs, no timing): zero per recipient in the fan-out core
# and through real connection handlers, and a bound per subscribe cycle.
.build/release/AllocationBudget
# Load harness smoke check: (a) and (d) at 1/100 size against the real server, subscribers
# split over 2 coordinated load generator processes; fails on any loss (no timing claims).
python3 Benchmarks/bench.py a d --servers switchboard --scale 0.01 --loadgen-processes 2 --check \
    --out "$(mktemp -t switchboard-bench-XXXXXX.jsonl)"
# Fuzz targets: seeds and saved crash inputs through the plain build, then libFuzzer.
for target in json client-message msgpack resp inflate config deflate-offer websocket-frames websocket-wire; do
    SWITCHBOARD_FUZZ_TARGET=$target .build/release/SwitchboardFuzz "Fuzz/corpus/$target" "Fuzz/regressions/$target"
done
scripts/fuzz.sh all 20
python3 -m pytest -q -p no:cacheprovider Tests/Interop
# Soak and chaos, short: 1,500 misbehaving connections for 60 s while Redis is killed and
# restarted; fails if the gateway dies, a reader loses an event, /readyz lies or RSS grows.
python3 Benchmarks/soak.py --binary .build/release/switchboard --short \
    --out "$(mktemp -t switchboard-soak-XXXXXX.jsonl)"
scripts/autobahn.sh .build/release/switchboard
# Plugin scaffold: `switchboard new-plugin` output builds, passes the contract kit and runs.
scripts/scaffold-check.sh
