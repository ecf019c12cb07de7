#!/usr/bin/env bash
# Runs the Swift tests under Thread Sanitizer and/or Address Sanitizer (Docs/fuzzing.md,
# "Sanitizers"). Each sanitizer builds into its own scratch folder (.build-tsan,
# .build-asan): sanitizer objects must not mix with the normal build. A first build of
# the dependencies takes 10–15 minutes on two cores; the test run a few more.
#
#   scripts/sanitizers.sh                 both, thread first
#   scripts/sanitizers.sh thread          only TSan
#   scripts/sanitizers.sh address [ARGS]  only ASan; ARGS go to `swift test` (e.g. --filter X)
#
# Exits non-zero if a test fails or a sanitizer reports (TSan/ASan make the test process
# fail on the first report: halt_on_error).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

which=${1:-both}
shift || true
run() {
    local sanitizer=$1
    shift
    local scratch=.build-${sanitizer:0:1}san
    echo "sanitizers: swift test --sanitize=$sanitizer (scratch $scratch)"
    swift build --build-tests --sanitize="$sanitizer" --scratch-path "$scratch"
    # One test at a time (--no-parallel): under a sanitizer's 5–15× slowdown, parallel
    # integration tests on two cores starve each other's event loops and miss their time
    # bounds; races are found inside each test (event loops, the kernel's shards, the bus),
    # which serial running does not hide. Swift's backtracer would take the signal the
    # sanitizer uses to report. A run stuck for an hour is killed and fails.
    SWIFT_BACKTRACE=enable=no \
    TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$PWD/scripts/tsan-suppressions.txt ${TSAN_OPTIONS:-}" \
    ASAN_OPTIONS="halt_on_error=1 detect_leaks=0 ${ASAN_OPTIONS:-}" \
        timeout --signal=QUIT --kill-after=30 3600 \
        swift test --skip-build --no-parallel --sanitize="$sanitizer" --scratch-path "$scratch" "$@"
}
case $which in
    both) run thread "$@"; run address "$@" ;;
    thread | address) run "$which" "$@" ;;
    *) echo "usage: scripts/sanitizers.sh [both|thread|address] [swift test arguments]" >&2; exit 2 ;;
esac
