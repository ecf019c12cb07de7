"""Starts the real `switchboard` binary on a free loopback port for interop tests."""
import os
import pathlib
import re
import subprocess
import tempfile
import time
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PUBLISH_KEY = "interop-publish-key-0123456789abcdef"
ADMIN_KEY = "interop-admin-key-0123456789abcdef"

CONFIG = """
sources:
  - name: publish
    plugin: webhook
    keys: ["${SWITCHBOARD_PUBLISH_KEY}"]
  - name: ticker
    plugin: timer
    every: 200ms
    topic: ticks
    type: tick
    data:
      text: "%s"
endpoints:
  - path: /shared
    encoders: [json, msgpack]
    topics: ["*"]
    compression: {mode: shared, min_size: 64}
  - path: /dedicated
    encoders: [json, msgpack]
    topics: ["*"]
    compression: {mode: dedicated, min_size: 0}
  - path: /plain
    encoders: [msgpack, json]
    topics: ["*"]
""" % ("tick " * 40)


class Gateway:
    def __init__(self, process, address, log, config=None):
        self.process = process
        self.address = address
        self.log = log
        # The configuration file, for reload tests that rewrite it.
        self.config = config

    def url(self, path):
        return "ws://%s%s" % (self.address, path)

    def publish(self, body):
        request = urllib.request.Request(
            "http://%s/api/publish" % self.address,
            data=body.encode(),
            headers={"X-API-Key": PUBLISH_KEY, "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 202

    def stats(self):
        import json

        request = urllib.request.Request("http://%s/stats" % self.address, headers={"X-Admin-Key": ADMIN_KEY})
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.load(response)


def start_gateway(config_text, env_extra=None, name="gateway", preexec_fn=None, port=0):
    """Starts the release binary with `config_text` on a free loopback port (or on `port`,
    to restart a gateway where its clients expect it); returns a Gateway once it logs its
    address. Call `stop_gateway` when done."""
    binary = os.environ.get("SWITCHBOARD_BINARY", str(ROOT / ".build/release/switchboard"))
    directory = tempfile.mkdtemp()
    config = pathlib.Path(directory) / ("%s.yaml" % name)
    config.write_text(config_text)
    log = pathlib.Path(directory) / ("%s.log" % name)
    env = dict(os.environ, SWITCHBOARD_PUBLISH_KEY=PUBLISH_KEY, SWITCHBOARD_ADMIN_KEY=ADMIN_KEY, **(env_extra or {}))
    with open(log, "w") as output:
        process = subprocess.Popen(
            [binary, "run", str(config), "--host", "127.0.0.1", "--port", str(port)],
            stdout=output, stderr=subprocess.STDOUT, env=env, preexec_fn=preexec_fn,
        )
    address = None
    for _ in range(400):
        match = re.search(r"address=(127\.0\.0\.1:\d+)", log.read_text())
        if match:
            address = match.group(1)
            break
        if process.poll() is not None:
            break
        time.sleep(0.05)
    assert address, log.read_text()
    return Gateway(process, address, log, config)


def stop_gateway(gateway):
    gateway.process.terminate()
    assert gateway.process.wait(timeout=15) == 0, gateway.log.read_text()


@pytest.fixture(scope="session")
def gateway():
    running = start_gateway(CONFIG, name="interop")
    yield running
    stop_gateway(running)
