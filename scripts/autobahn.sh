#!/usr/bin/env bash
# Autobahn TestSuite (fuzzingclient) against configs/autobahn-echo.yaml: groups 1–7, 10,
# 12 and 13, once without compression and once per permessage-deflate mode.
# Prints one summary line per agent and exits 1 if any case is FAILED or, for the deflate
# agents, UNIMPLEMENTED. For the plain agent, groups 12/13 are UNIMPLEMENTED by design
# (that endpoint offers no compression; see Docs/protocol.md).
#
# Usage: scripts/autobahn.sh [path/to/switchboard]   (default: .build/debug/switchboard)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
BINARY="${1:-.build/debug/switchboard}"
VENV=".venv-autobahn"
REPORTS="${AUTOBAHN_REPORTS:-.build/autobahn-reports}"
PORT="${AUTOBAHN_PORT:-9001}"
# Case patterns (JSON list items); the full run is the default.
CASES="${AUTOBAHN_CASES:-\"1.*\", \"2.*\", \"3.*\", \"4.*\", \"5.*\", \"6.*\", \"7.*\", \"10.*\", \"12.*\", \"13.*\"}"

# The suite is Python 2.7 only; the image carries CPython 2.7.18 under pyenv.
if [ ! -x "$VENV/bin/wstest" ]; then
    PY2=""
    for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/2.7*/bin/python python2.7; do
        if command -v "$candidate" >/dev/null 2>&1; then PY2="$candidate"; break; fi
    done
    if [ -z "$PY2" ]; then
        echo "autobahn: Python 2.7 not found (expected under pyenv)" >&2
        exit 1
    fi
    "$PY2" -m pip install -q --disable-pip-version-check virtualenv 2>/dev/null
    "$PY2" -m virtualenv -q "$VENV"
    # wsaccel: C UTF-8 validation and masking for the (otherwise pure Python) client.
    "$VENV/bin/pip" install -q --disable-pip-version-check autobahntestsuite wsaccel 2>/dev/null
fi

"$BINARY" run configs/autobahn-echo.yaml --host 127.0.0.1 --port "$PORT" --log-level warning &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break
    sleep 0.1
done

rm -rf "$REPORTS"
mkdir -p "$REPORTS"
# One wstest per agent, in parallel: the Python client and the server take turns per
# message, so running the agents side by side uses both cores.
pids=()
for agent in plain:echo deflate-shared:echo-shared deflate-dedicated:echo-dedicated; do
    name="${agent%%:*}"
    path="${agent#*:}"
    mkdir -p "$REPORTS/$name"
    cat > "$REPORTS/$name/spec.json" <<SPEC
{
  "outdir": ".",
  "servers": [{"agent": "$name", "url": "ws://127.0.0.1:$PORT/$path"}],
  "cases": [$CASES],
  "exclude-cases": [],
  "exclude-agent-cases": {}
}
SPEC
    (cd "$REPORTS/$name" && "$ROOT/$VENV/bin/wstest" -m fuzzingclient -s spec.json > wstest.log 2>&1) &
    pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid" || true; done

python3 - "$REPORTS" <<'PY'
import glob, json, os, sys
index = {}
for path in glob.glob(os.path.join(sys.argv[1], "*", "index.json")):
    index.update(json.load(open(path)))
if len(index) != 3:
    print("autobahn: expected reports for 3 agents, found %d (see %s/*/wstest.log)" % (len(index), sys.argv[1]))
    sys.exit(1)
failed = False
for agent, cases in sorted(index.items()):
    counts = {}
    bad = []
    for case, result in cases.items():
        behavior = result["behavior"]
        close = result.get("behaviorClose", "OK")
        group = case.split(".")[0]
        documented = agent == "plain" and group in ("12", "13") and behavior == "UNIMPLEMENTED"
        ok = behavior in ("OK", "NON-STRICT", "INFORMATIONAL") or documented
        if close not in ("OK", "INFORMATIONAL", "NON-STRICT"):
            ok = False
        counts[behavior] = counts.get(behavior, 0) + 1
        if not ok:
            bad.append("%s=%s/%s" % (case, behavior, close))
    print("autobahn %s: %d cases %s" % (agent, len(cases), " ".join("%s=%d" % kv for kv in sorted(counts.items()))))
    if bad:
        failed = True
        print("  not acceptable: " + " ".join(sorted(bad)[:40]))
sys.exit(1 if failed else 0)
PY
