#!/usr/bin/env bash
# Checks that `switchboard new-plugin` writes plugins that build and pass the contract kit
# unchanged, the worked example of Docs/writing-a-plugin.md: it scaffolds a source
# (example_ticker), a filter (example_gate) and an encoder (example_lines) into this
# checkout, builds, runs their contract tests and the declaration tests, checks and runs a
# configuration that uses all three (a WebSocket client gets a tick through the filter in
# the new format), then restores Package.swift and the registry and removes the folders,
# also when a step fails. Needs the release build (scripts/test.sh runs it last).
set -euo pipefail
cd "$(dirname "$0")/.."
folders=(ExampleTicker ExampleGate ExampleLines)
for folder in "${folders[@]}"; do
    if [ -e "Plugins/$folder" ]; then echo "scaffold-check: Plugins/$folder exists; remove it first" >&2; exit 1; fi
done
work=$(mktemp -d -t switchboard-scaffold-XXXXXX)
cp Package.swift Sources/SwitchboardPlugins/BuiltinPlugins.swift "$work/"
gateway=""
restore() {
    if [ -n "$gateway" ]; then kill "$gateway" 2>/dev/null || true; fi
    cp "$work/Package.swift" Package.swift
    cp "$work/BuiltinPlugins.swift" Sources/SwitchboardPlugins/BuiltinPlugins.swift
    for folder in "${folders[@]}"; do rm -rf "Plugins/$folder"; done
    rm -rf "$work"
    # Leave no binary or test bundle with the example plugins in it behind.
    swift build -c release --build-tests > /dev/null 2>&1 || echo "scaffold-check: the rebuild after restoring failed" >&2
}
trap restore EXIT

.build/release/switchboard new-plugin source example_ticker
.build/release/switchboard new-plugin filter example_gate
.build/release/switchboard new-plugin encoder example_lines
swift build -c release --build-tests
swift test -c release --skip-build --filter 'ExampleTickerContractTests|ExampleGateContractTests|ExampleLinesContractTests|PluginDeclarationTests'

cat > "$work/example.yaml" <<'YAML'
listener: {host: 127.0.0.1, port: 0}
sources:
  - plugin: example_ticker
    topic: ticks
    interval: 100ms
endpoints:
  - path: /ws
    encoders: [example_lines, json]
    filters:
      - plugin: example_gate
        value: ${EXAMPLE_VALUE}
YAML
EXAMPLE_VALUE=example-value-123 .build/release/switchboard check "$work/example.yaml"
EXAMPLE_VALUE=example-value-123 .build/release/switchboard run "$work/example.yaml" > "$work/gateway.log" 2>&1 &
gateway=$!
python3 - "$work/gateway.log" <<'PY'
import asyncio, json, re, sys, time
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

async def main(log):
    deadline = time.monotonic() + 20
    port = None
    while port is None and time.monotonic() < deadline:
        # A whole line only: the log may be read while a line is half written.
        found = re.search(r"endpoints=ws://[^ /]*:(\d+)/\S* ", open(log).read())
        if found:
            port = int(found.group(1))
        else:
            await asyncio.sleep(0.1)
    assert port, "the gateway did not say which port it listens on:\n" + open(log).read()
    url = f"ws://127.0.0.1:{port}/ws"
    try:
        async with connect(url, subprotocols=["switchboard.example_lines"]) as ws:
            raise AssertionError("example_gate admitted a client without its header")
    except InvalidStatus as refused:
        assert refused.response.status_code == 403, refused.response.status_code
    async with connect(url, subprotocols=["switchboard.example_lines"],
                                  additional_headers={"X-Example": "example-value-123"}) as ws:
        assert ws.subprotocol == "switchboard.example_lines", ws.subprotocol
        await ws.send(json.dumps({"type": "subscribe", "data": "ticks"}))
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if message.get("type") == "tick":
                assert message["topic"] == "ticks" and message["data"]["count"] >= 1, message
                break
    print("scaffold-check: example_ticker → example_gate → example_lines delivered a tick")

asyncio.run(main(sys.argv[1]))
PY
