#!/usr/bin/env bash
# Fuzzes Switchboard's parsers with libFuzzer (Docs/fuzzing.md).
#
#   scripts/fuzz.sh [--no-build] TARGET SECONDS    one target
#   scripts/fuzz.sh [--no-build] all SECONDS       every target in turn, SECONDS each
#
# Builds the SwitchboardFuzz product with -sanitize=fuzzer,address into .build-fuzz (not
# .build: sanitizer objects must not mix with the normal build), replays the crash inputs
# kept in Fuzz/regressions/TARGET (failing if one still crashes), then fuzzes from the seeds
# in Fuzz/corpus/TARGET. New inputs go to .build-fuzz/corpus/TARGET, crashes to
# .build-fuzz/artifacts/TARGET-*. Exits non-zero when a target crashed, and says how to
# reproduce it.
#
# Environment: FUZZ_SEED=N repeats a run's mutation sequence (printed at the start);
# FUZZ_ARGS="-jobs=2 -workers=2" passes extra libFuzzer flags.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS=(json client-message msgpack resp inflate config deflate-offer websocket-frames websocket-wire)
SCRATCH=.build-fuzz
BINARY=$SCRATCH/release/SwitchboardFuzz

usage() {
    echo "usage: scripts/fuzz.sh [--no-build] TARGET|all SECONDS" >&2
    echo "targets: ${TARGETS[*]}" >&2
    exit 2
}

build=1
if [[ ${1:-} == --no-build ]]; then
    build=0
    shift
fi
[[ $# -eq 2 ]] || usage
target=$1
seconds=$2
[[ $seconds =~ ^[0-9]+$ ]] || usage
if [[ $target == all ]]; then
    selected=("${TARGETS[@]}")
else
    known=0
    for name in "${TARGETS[@]}"; do
        if [[ $name == "$target" ]]; then known=1; fi
    done
    ((known)) || usage
    selected=("$target")
fi

seed=${FUZZ_SEED:-$((($(date +%s) ^ $$) % 2147483646 + 1))}
[[ $seed =~ ^[0-9]+$ ]] || { echo "fuzz: FUZZ_SEED must be a number" >&2; exit 2; }
extra=()
read -r -a extra <<<"${FUZZ_ARGS:-}"

if ((build)); then
    # SWITCHBOARD_LIBFUZZER makes SwitchboardFuzz_main start libFuzzer's driver
    # (Fuzz/Sources/FuzzEntry.swift); without it the binary only replays files.
    swift build -c release --scratch-path "$SCRATCH" --product SwitchboardFuzz \
        -Xswiftc -sanitize=fuzzer,address -Xswiftc -DSWITCHBOARD_LIBFUZZER
fi
if [[ ! -x $BINARY ]]; then
    echo "fuzz: $BINARY does not exist; run without --no-build" >&2
    exit 1
fi

# Swift's crash backtracer would take the signal libFuzzer needs to save the crashing input.
export SWIFT_BACKTRACE=enable=no

max_len() {
    case $1 in
        config | inflate) echo 8192 ;;
        deflate-offer) echo 1024 ;;
        *) echo 4096 ;;
    esac
}

# Replays every file in Fuzz/regressions/TARGET; fails if any of them still crashes.
replay_regressions() {
    local name=$1
    local files=()
    shopt -s nullglob
    files=("Fuzz/regressions/$name"/*)
    shopt -u nullglob
    if ((${#files[@]} == 0)); then
        return 0
    fi
    echo "fuzz: $name: replaying ${#files[@]} regression input(s) from Fuzz/regressions/$name"
    if ! SWITCHBOARD_FUZZ_TARGET=$name "$BINARY" -artifact_prefix="$SCRATCH/artifacts/$name-regression-" "${files[@]}"; then
        echo "fuzz: $name: a regression input crashes again; reproduce one with:" >&2
        echo "  SWITCHBOARD_FUZZ_TARGET=$name $BINARY Fuzz/regressions/$name/FILE" >&2
        return 1
    fi
}

# Fuzzes one target for $seconds from its seeds and the inputs earlier runs found.
fuzz_target() {
    local name=$1
    local seeds=Fuzz/corpus/$name
    local work=$SCRATCH/corpus/$name
    local artifacts=$SCRATCH/artifacts
    mkdir -p "$work" "$artifacts"
    replay_regressions "$name" || return 1

    # The working corpus collects what libFuzzer finds; the seed directory stays as committed.
    local file
    if [[ -d $seeds ]]; then
        for file in "$seeds"/*; do
            if [[ -f $file && ! -e $work/${file##*/} ]]; then cp "$file" "$work/"; fi
        done
    fi
    local args=(
        -max_total_time="$seconds" -max_len="$(max_len "$name")" -timeout=10 -rss_limit_mb=2048
        -seed="$seed" -artifact_prefix="$artifacts/$name-" -print_final_stats=1
    )
    if [[ -f Fuzz/dict/$name.dict ]]; then args+=(-dict="Fuzz/dict/$name.dict"); fi
    args+=(${extra[@]+"${extra[@]}"} "$work")
    if [[ -d $seeds ]]; then args+=("$seeds"); fi

    local marker
    marker=$(mktemp "$SCRATCH/fuzz-start.XXXXXX")
    echo "fuzz: $name: ${seconds}s, seed $seed (FUZZ_SEED=$seed repeats it)"
    local status=0
    SWITCHBOARD_FUZZ_TARGET=$name "$BINARY" "${args[@]}" || status=$?
    if ((status != 0)); then
        local artifact
        artifact=$(find "$artifacts" -maxdepth 1 -type f -name "$name-*" -newer "$marker" -print -quit)
        echo "fuzz: $name: libFuzzer exited with status $status" >&2
        if [[ -n $artifact ]]; then
            echo "fuzz: $name: failing input: $artifact" >&2
            echo "  reproduce:  SWITCHBOARD_FUZZ_TARGET=$name $BINARY $artifact" >&2
            echo "  minimize:   SWITCHBOARD_FUZZ_TARGET=$name $BINARY -minimize_crash=1 -runs=100000 -artifact_prefix=$artifacts/$name-min- $artifact" >&2
            echo "  keep it:    cp $artifact Fuzz/regressions/$name/" >&2
        fi
    fi
    rm -f "$marker"
    return "$status"
}

failed=()
for name in "${selected[@]}"; do
    fuzz_target "$name" || failed+=("$name")
done
if ((${#failed[@]} > 0)); then
    echo "fuzz: failed: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: no crash in ${selected[*]} (seed $seed)"
