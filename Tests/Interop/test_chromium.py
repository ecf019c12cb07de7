"""Headless Chromium's own WebSocket: JSON with its permessage-deflate offer, and
MessagePack binary frames. The page reports back to a small local HTTP server."""
import contextlib
import http.server
import json
import os
import shutil
import subprocess
import tempfile
import threading

import pytest

PAGE = """<!doctype html><html><body><script>
const results = {};
function report() {
  fetch('/result', {method: 'POST', body: JSON.stringify(results)});
}
function open(name, url, protocol, binary) {
  return new Promise((resolve) => {
    const ws = protocol ? new WebSocket(url, protocol) : new WebSocket(url);
    if (binary) ws.binaryType = 'arraybuffer';
    const seen = [];
    ws.onopen = () => {
      results[name] = {extensions: ws.extensions, protocol: ws.protocol};
      if (binary) {
        // {"type":"subscribe","data":"ticks"} in MessagePack
        ws.send(new Uint8Array([0x82,0xa4,0x74,0x79,0x70,0x65,0xa9,0x73,0x75,0x62,0x73,0x63,0x72,0x69,0x62,0x65,0xa4,0x64,0x61,0x74,0x61,0xa5,0x74,0x69,0x63,0x6b,0x73]));
      } else {
        ws.send(JSON.stringify({type: 'subscribe', data: 'ticks', padding: 'p'.repeat(500)}));
      }
    };
    ws.onmessage = (event) => {
      if (binary) {
        const bytes = new Uint8Array(event.data);
        seen.push({first: bytes[0], length: bytes.length});
      } else {
        seen.push(JSON.parse(event.data));
      }
      if (seen.length >= 3) { results[name].messages = seen; ws.close(1000); resolve(); }
    };
    ws.onerror = () => { results[name].error = true; resolve(); };
  });
}
Promise.all([
  open('json', 'WSURL/shared', null, false),
  open('msgpack', 'WSURL/shared', 'switchboard.msgpack', true),
  open('dedicated', 'WSURL/dedicated', null, false),
]).then(report);
</script></body></html>"""


def find_chromium():
    for name in ["chromium", "chromium-browser", "google-chrome"]:
        path = shutil.which(name)
        if path:
            return path
    return None


@contextlib.contextmanager
def browser_page(chromium, page, on_post):
    """Serves `page` on a local HTTP server, opens it in headless Chromium, and hands every
    POST the page makes to `on_post(path, body)`; everything stops when the block ends."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = page.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            on_post(self.path, self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    profile = tempfile.mkdtemp()
    browser = subprocess.Popen(
        [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--user-data-dir=" + profile, "http://127.0.0.1:%d/" % server.server_address[1]],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        browser.kill()
        browser.wait()
        server.shutdown()
        shutil.rmtree(profile, ignore_errors=True)


def test_chromium_websocket(gateway):
    chromium = find_chromium()
    assert chromium, "chromium is not installed (apt-get install chromium)"
    page = PAGE.replace("WSURL", "ws://" + gateway.address)
    received = {}
    done = threading.Event()

    def on_post(path, body):
        received.update(json.loads(body))
        done.set()

    with browser_page(chromium, page, on_post):
        assert done.wait(60), "the page did not report back"

    json_client = received["json"]
    assert "permessage-deflate" in json_client["extensions"]
    assert json_client["messages"][0]["type"] == "subscribed"
    ticks = json_client["messages"][1:]
    assert all(m["type"] == "tick" and m["data"]["text"].startswith("tick ") for m in ticks)

    msgpack_client = received["msgpack"]
    assert msgpack_client["protocol"] == "switchboard.msgpack"
    assert "permessage-deflate" in msgpack_client["extensions"]
    # Fixmaps of 3 (reply) or 4 (event) entries.
    assert [m["first"] for m in msgpack_client["messages"]] == [0x83, 0x84, 0x84]

    assert "permessage-deflate" in received["dedicated"]["extensions"]
    assert "server_no_context_takeover" not in received["dedicated"]["extensions"]
    assert received["dedicated"]["messages"][1]["type"] == "tick"
