"""Operations on the real binary: hot reload (SIGHUP and POST /admin/reload), the paced
drain on SIGTERM, and TLS (wss:// and https:// with certificate verification)."""
import asyncio
import json
import os
import pathlib
import signal
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

import websockets
import websockets.sync.client

from conftest import ADMIN_KEY, PUBLISH_KEY, start_gateway, stop_gateway

KEY_A = "reload-key-a-0123456789abcdef"
KEY_B = "reload-key-b-0123456789abcdef"

BASE = """
sources:
  - name: publish
    plugin: webhook
    keys: ["${SWITCHBOARD_PUBLISH_KEY}"]
endpoints:
  - path: /keep
    encoders: [json]
    topics: ["*"]
  - path: /guarded
    encoders: [json]
    topics: ["*"]
    filters:
      - plugin: api_key
        keys:
%s
  - path: /gone
    encoders: [json]
    topics: ["*"]
shutdown: {drain: 1s}
"""

BOTH_KEYS = """          - {name: a, key: "%s"}
          - {name: b, key: "%s"}""" % (KEY_A, KEY_B)
ONLY_A = """          - {name: a, key: "%s"}""" % KEY_A


def publish(gateway, events):
    request = urllib.request.Request(
        "http://%s/api/publish" % gateway.address, data=json.dumps(events).encode(),
        headers={"X-API-Key": PUBLISH_KEY, "Content-Type": "application/json"}, method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 202


def http(gateway, method, path, admin=True, scheme="http", context=None):
    headers = {"X-Admin-Key": ADMIN_KEY} if admin else {}
    request = urllib.request.Request("%s://%s%s" % (scheme, gateway.address, path), headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def wait_for(predicate, timeout=10, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


class Collector(threading.Thread):
    """Subscribes on a WebSocket and records every `n` of events of type `seq`, then the
    close code and reason."""

    def __init__(self, url, topic, headers=None):
        super().__init__(daemon=True)
        self.ws = websockets.sync.client.connect(url, additional_headers=headers or {}, open_timeout=5)
        self.ws.send(json.dumps({"type": "subscribe", "data": topic}))
        reply = json.loads(self.ws.recv(timeout=5))
        assert reply["type"] == "subscribed", reply
        self.numbers = []
        self.close_code = None
        self.close_reason = None
        self.closed_at = None
        self.start()

    def run(self):
        try:
            for message in self.ws:
                event = json.loads(message)
                if event.get("type") == "seq":
                    self.numbers.append(event["data"]["n"])
        except websockets.ConnectionClosed:
            pass
        self.closed_at = time.time()
        received = self.ws.protocol.close_rcvd
        if received is not None:
            self.close_code = received.code
            self.close_reason = received.reason


def test_reload_keeps_unchanged_endpoints_and_refilters_changed_ones():
    gateway = start_gateway(BASE % BOTH_KEYS, name="reload")
    config = pathlib.Path(gateway.config)
    try:
        keep = Collector("ws://%s/keep" % gateway.address, "seq")
        allowed = Collector("ws://%s/guarded" % gateway.address, "seq", {"X-API-Key": KEY_A})
        refused = Collector("ws://%s/guarded" % gateway.address, "seq", {"X-API-Key": KEY_B})
        gone = Collector("ws://%s/gone" % gateway.address, "seq")

        # Publish without pause while the configuration changes underneath.
        stop = threading.Event()
        sent = []

        def publisher():
            n = 0
            while not stop.is_set():
                publish(gateway, [{"topic": "seq", "type": "seq", "data": {"n": n}}])
                sent.append(n)
                n += 1
                time.sleep(0.005)

        thread = threading.Thread(target=publisher, daemon=True)
        thread.start()
        wait_for(lambda: len(keep.numbers) > 20, what="first events")

        # 1. An invalid file by SIGHUP: logged, the old configuration stays in force.
        config.write_text(BASE % BOTH_KEYS + "\nendpoints_typo: [\n")
        gateway.process.send_signal(signal.SIGHUP)
        wait_for(lambda: "configuration reload rejected" in gateway.log.read_text(), what="rejection log")
        assert "invalid YAML" in gateway.log.read_text()
        assert gateway.process.poll() is None

        # 2. The same invalid file by the admin API: every error in the answer.
        config.write_text(BASE % BOTH_KEYS + "\nunknown_top_level: 1\n")
        status, body = http(gateway, "POST", "/admin/reload")
        assert status == 422, body
        assert body["status"] == "rejected"
        assert any("unknown_top_level" in error for error in body["errors"]), body
        status, body = http(gateway, "POST", "/admin/reload", admin=False)
        assert status == 403, body

        # 3. A valid file: /gone removed, /added added, key B dropped from /guarded, /keep
        # unchanged (only reordered keys and comments around it).
        new = (BASE % ONLY_A).replace(
            "  - path: /gone\n    encoders: [json]\n    topics: [\"*\"]\n",
            "  - path: /added\n    encoders: [json]\n",
        ).replace("  - path: /keep\n    encoders: [json]\n    topics: [\"*\"]\n",
                  "  # unchanged, keys reordered\n  - topics: [\"*\"]\n    path: /keep\n    encoders: [json]\n")
        config.write_text(new)
        gateway.process.send_signal(signal.SIGHUP)
        wait_for(lambda: "configuration reloaded" in gateway.log.read_text(), what="reload log")
        log = gateway.log.read_text()
        assert "endpoint /gone removed" in log
        assert "endpoint /added added" in log
        assert "endpoint /guarded filters changed (1 connections admitted again, 1 closed)" in log, log
        assert "endpoint /keep" not in log.split("configuration reloaded")[-1]
        assert "source publish" not in log.split("configuration reloaded")[-1], "an unchanged source was restarted"

        wait_for(lambda: refused.closed_at is not None and gone.closed_at is not None, what="closes")
        assert refused.close_code == 1008, (refused.close_code, refused.close_reason)
        assert "refused after a configuration reload" in refused.close_reason
        assert gone.close_code == 1001 and "removed" in gone.close_reason, (gone.close_code, gone.close_reason)

        # The new endpoint takes connections; the removed one is gone.
        with websockets.sync.client.connect("ws://%s/added" % gateway.address, open_timeout=5) as ws:
            ws.send(json.dumps({"type": "ping"}))
            assert json.loads(ws.recv(timeout=5))["type"] == "pong"
        try:
            websockets.sync.client.connect("ws://%s/gone" % gateway.address, open_timeout=5)
            raise AssertionError("/gone still accepts connections")
        except websockets.InvalidStatus as error:
            assert error.response.status_code == 404

        time.sleep(0.3)
        stop.set()
        thread.join()
        last = sent[-1]
        wait_for(lambda: keep.numbers and keep.numbers[-1] == last, what="last event on /keep")
        wait_for(lambda: allowed.numbers and allowed.numbers[-1] == last, what="last event on /guarded")
        # Across both reloads the untouched connections missed nothing.
        first = keep.numbers[0]
        assert keep.numbers == list(range(first, last + 1)), "gap or duplicate on /keep"
        first = allowed.numbers[0]
        assert allowed.numbers == list(range(first, last + 1)), "gap or duplicate on the re-admitted connection"
        assert keep.close_code is None and allowed.close_code is None

        status, stats = http(gateway, "GET", "/stats")
        assert stats["reloads"]["applied"] == 1 and stats["reloads"]["rejected"] == 2, stats["reloads"]
        keep.ws.close()
        allowed.ws.close()
    finally:
        stop_gateway(gateway)


def test_sigterm_spreads_closes_over_the_drain_window():
    config = """
sources:
  - name: tick
    plugin: timer
    every: 50ms
    topic: ticks
    type: seq
    data: {n: 1}
endpoints:
  - path: /ws
    encoders: [json]
    subscribe: [ticks]
shutdown: {drain: 3s, reconnect_jitter: 4s}
"""
    gateway = start_gateway(config, name="drain")
    count = 60
    results = []

    async def client():
        async with websockets.connect("ws://%s/ws" % gateway.address) as ws:
            received = 0
            try:
                async for _ in ws:
                    received += 1
            except websockets.ConnectionClosed:
                pass
            results.append((time.time(), ws.close_code, ws.close_reason, received))

    async def main():
        tasks = [asyncio.create_task(client()) for _ in range(count)]
        await asyncio.sleep(1.0)
        start = time.time()
        gateway.process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=15)
        return start

    try:
        start = asyncio.run(main())
        assert gateway.process.wait(timeout=15) == 0, gateway.log.read_text()
    finally:
        if gateway.process.poll() is None:
            gateway.process.kill()
    assert len(results) == count
    times = sorted(r[0] - start for r in results)
    spread = times[-1] - times[0]
    print("close times: first %.2fs, median %.2fs, last %.2fs" % (times[0], times[len(times) // 2], times[-1]))
    # Spread evenly over the 3 s window: not all in the same instant, none long after it.
    assert spread >= 2.0, times
    assert times[-1] <= 5.0, times
    in_first_half_second = sum(1 for t in times if t - times[0] < 0.5)
    assert in_first_half_second <= count // 3, times
    delays = []
    for _, code, reason, _ in results:
        assert code == 1001, (code, reason)
        assert reason.startswith("server shutting down; reconnect_after_ms="), reason
        delays.append(int(reason.rsplit("=", 1)[1]))
    assert all(0 <= d <= 4000 for d in delays)
    assert len(set(delays)) > count // 2, "reconnect delays are not spread"
    # Deliveries went on to the clients not yet closed: the last closed got more ticks.
    by_time = sorted(results)
    assert by_time[-1][3] > by_time[0][3] + 10, (by_time[0][3], by_time[-1][3])


def test_second_signal_closes_everything_at_once():
    config = """
endpoints:
  - path: /ws
    encoders: [json]
shutdown: {drain: 30s}
"""
    gateway = start_gateway(config, name="hurry")
    closed = []

    async def client():
        async with websockets.connect("ws://%s/ws" % gateway.address) as ws:
            try:
                await ws.recv()
            except websockets.ConnectionClosed:
                pass
            closed.append((time.time(), ws.close_code))

    async def main():
        tasks = [asyncio.create_task(client()) for _ in range(30)]
        await asyncio.sleep(0.5)
        gateway.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(1.0)
        second = time.time()
        gateway.process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=10)
        return second

    try:
        second = asyncio.run(main())
        assert gateway.process.wait(timeout=10) == 0
        exited = time.time()
    finally:
        if gateway.process.poll() is None:
            gateway.process.kill()
    assert all(code == 1001 for _, code in closed)
    assert max(t for t, _ in closed) - second < 1.5
    assert exited - second < 3.0
    assert "second signal" in gateway.log.read_text()


def make_certificate(directory, name):
    certificate = os.path.join(directory, name + ".pem")
    key = os.path.join(directory, name + "-key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", key, "-out", certificate, "-days", "2", "-subj", "/CN=" + name,
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True,
    )
    return certificate, key


def test_tls_with_certificate_verification_and_reload_of_the_files():
    directory = tempfile.mkdtemp()
    certificate, key = make_certificate(directory, "first")
    config = """
listener:
  tls: {certificate: %s, key: %s}
sources:
  - name: publish
    plugin: webhook
    keys: ["${SWITCHBOARD_PUBLISH_KEY}"]
endpoints:
  - path: /ws
    encoders: [json]
""" % (certificate, key)
    gateway = start_gateway(config, name="tls")
    try:
        assert "wss://" in gateway.log.read_text()
        context = ssl.create_default_context(cafile=certificate)
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
        status, body = http(gateway, "GET", "/healthz", admin=False, scheme="https", context=context)
        assert status == 200 and body["status"] == "ok"

        with websockets.sync.client.connect("wss://%s/ws" % gateway.address, ssl=context, open_timeout=5) as ws:
            ws.send(json.dumps({"type": "subscribe", "data": "secure"}))
            assert json.loads(ws.recv(timeout=5))["type"] == "subscribed"
            request = urllib.request.Request(
                "https://%s/api/publish" % gateway.address,
                data=json.dumps({"topic": "secure", "type": "note", "data": {"ok": True}}).encode(),
                headers={"X-API-Key": PUBLISH_KEY, "Content-Type": "application/json"}, method="POST",
            )
            with urllib.request.urlopen(request, timeout=10, context=context) as response:
                assert response.status == 202
            event = json.loads(ws.recv(timeout=5))
            assert event["type"] == "note" and event["data"] == {"ok": True}
            assert ws.socket.version() in ("TLSv1.2", "TLSv1.3")

        # A client that does not trust the certificate is refused by its own verification.
        try:
            websockets.sync.client.connect("wss://%s/ws" % gateway.address, ssl=ssl.create_default_context(), open_timeout=5)
            raise AssertionError("an unverified certificate was accepted")
        except ssl.SSLCertVerificationError:
            pass
        # TLS 1.1 is refused.
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        old.load_verify_locations(certificate)
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
        try:
            websockets.sync.client.connect("wss://%s/ws" % gateway.address, ssl=old, open_timeout=5)
            raise AssertionError("TLS 1.1 was accepted")
        except (ssl.SSLError, OSError, websockets.InvalidHandshake):
            pass

        # Renewed files are read again on reload; new connections get the new certificate.
        second_certificate, second_key = make_certificate(directory, "second")
        os.replace(second_certificate, certificate)
        os.replace(second_key, key)
        status, body = http(gateway, "POST", "/admin/reload", scheme="https", context=context)
        # The old context still trusts the old certificate only, which served this request.
        assert status == 200 and "listener.tls: certificate and key read again" in body["changes"], body
        renewed = ssl.create_default_context(cafile=certificate)
        with websockets.sync.client.connect("wss://%s/ws" % gateway.address, ssl=renewed, open_timeout=5) as ws:
            peer = ws.socket.getpeercert()
            assert dict(item[0] for item in peer["subject"])["commonName"] == "second"
    finally:
        stop_gateway(gateway)


def test_metrics_parse_with_the_prometheus_client_parser():
    """/metrics read by Prometheus's own Python parser: every family typed, and the
    numbers /stats shows are the ones /metrics shows."""
    from prometheus_client.parser import text_string_to_metric_families

    config = """
sources:
  - name: publish
    plugin: webhook
    keys: ["${SWITCHBOARD_PUBLISH_KEY}"]
endpoints:
  - path: /ws
    encoders: [json]
    compression: {mode: shared, min_size: 0}
"""
    gateway = start_gateway(config, name="metrics")
    try:
        with websockets.sync.client.connect("ws://%s/ws" % gateway.address, open_timeout=5) as ws:
            ws.send(json.dumps({"type": "subscribe", "data": "news"}))
            ws.recv(timeout=5)
            publish(gateway, [{"topic": "news", "type": "note", "data": {"n": n}} for n in range(5)])
            for _ in range(5):
                ws.recv(timeout=5)
            with urllib.request.urlopen("http://%s/metrics" % gateway.address, timeout=5) as response:
                assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                text = response.read().decode()
            status, stats = http(gateway, "GET", "/stats")
        families = {family.name: family for family in text_string_to_metric_families(text)}
        # The parser strips _total from counter names.
        assert families["switchboard_deliveries"].type == "counter"
        assert families["switchboard_publish_to_write_seconds"].type == "histogram"
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
        assert samples[("switchboard_deliveries_total", ())] == stats["deliveries_out"] == 5
        assert samples[("switchboard_events_in_total", ())] == stats["events_in"] == 5
        assert samples[("switchboard_connections", (("endpoint", "/ws"),))] == stats["connections"]["per_endpoint"]["/ws"]["connections"] == 1
        assert samples[("switchboard_publish_to_write_seconds_count", ())] >= 1
        assert all(family.documentation for family in families.values()), "a family without # HELP"
    finally:
        stop_gateway(gateway)


RECHECK = """
sources:
  - name: publish
    plugin: webhook
    keys: ["${SWITCHBOARD_PUBLISH_KEY}"]
endpoints:
  - path: /limited
    encoders: [json]
    topics: ["*"]
    filters:
      - plugin: rate_limit
        connect_rate: 0.01
        connect_burst: %d
  - path: /token
    encoders: [json]
    topics: ["*"]
    filters:
      - plugin: jwt
        issuer: https://issuer.test
        audience: switchboard
        leeway: %s
        keys: [{kid: k1, algorithm: HS256, secret: "%s"}]
shutdown: {drain: 500ms}
"""

RECHECK_SECRET = "recheck-secret-0123456789abcdef0123456789"


def recheck_token(exp):
    import jwt
    now = int(time.time())
    body = {"iss": "https://issuer.test", "sub": "alice", "aud": "switchboard", "iat": now, "exp": exp}
    return jwt.encode(body, RECHECK_SECRET, algorithm="HS256", headers={"kid": "k1"})


def test_reload_rechecks_without_spending_connect_tokens_and_reconnects_refreshed_tokens():
    """A re-run of the filters on reload is not a new connection (rate_limit spends no
    connect token on it), and a connection that refreshed its token in-band is not judged
    by the token it connected with: it is closed with 1001 to reconnect with its current one."""
    gateway = start_gateway(RECHECK % (1, "0s", RECHECK_SECRET), name="recheck")
    config = pathlib.Path(gateway.config)
    try:
        limited = Collector("ws://%s/limited" % gateway.address, "seq")
        # The only token of the bucket is spent: a second connection is refused.
        try:
            websockets.sync.client.connect("ws://%s/limited" % gateway.address, open_timeout=5)
            raise AssertionError("the connect-rate bucket was not empty")
        except websockets.InvalidStatus as error:
            assert error.response.status_code == 429

        # Connected with a token that expires in 2 s, refreshed to one valid for 5 minutes.
        first = recheck_token(int(time.time()) + 2)
        refreshed = websockets.sync.client.connect(
            "ws://%s/token" % gateway.address, additional_headers={"Authorization": "Bearer " + first}, open_timeout=5)
        refreshed.send(json.dumps({"type": "refresh", "data": recheck_token(int(time.time()) + 300)}))
        assert json.loads(refreshed.recv(timeout=5))["type"] == "refreshed"
        # An unrefreshed connection with a long token is simply admitted again.
        plain = Collector("ws://%s/token" % gateway.address, "seq",
                          {"Authorization": "Bearer " + recheck_token(int(time.time()) + 300)})
        time.sleep(2.5)  # the first token has expired

        # New filters on both endpoints (a second token in the bucket; leeway 0ms, still none).
        config.write_text(RECHECK % (2, "0ms", RECHECK_SECRET))
        status, body = http(gateway, "POST", "/admin/reload")
        assert status == 200, body
        assert "endpoint /limited filters changed (1 connections admitted again, 0 closed)" in body["changes"], body
        assert "endpoint /token filters changed (1 connections admitted again, 1 closed)" in body["changes"], body

        # The re-admission spent nothing: the new bucket still lets two connections in.
        for _ in range(2):
            websockets.sync.client.connect("ws://%s/limited" % gateway.address, open_timeout=5).close()
        # The refreshed connection is asked to reconnect (1001), not refused (1008).
        try:
            while True:
                refreshed.recv(timeout=5)
        except websockets.ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.code == 1001, closed
            assert "filters changed" in closed.rcvd.reason, closed.rcvd.reason
        time.sleep(0.3)
        assert limited.close_code is None and plain.close_code is None
        limited.ws.close()
        plain.ws.close()
    finally:
        stop_gateway(gateway)


def test_source_routes_cannot_shadow_built_in_or_endpoint_paths():
    """A webhook at /metrics or at an endpoint's path is refused at start and by reload."""
    clash = BASE.replace("    keys: [\"${SWITCHBOARD_PUBLISH_KEY}\"]\n",
                         "    keys: [\"${SWITCHBOARD_PUBLISH_KEY}\"]\n  - name: shadow\n    plugin: webhook\n    path: /metrics\n    keys: [\"${SWITCHBOARD_PUBLISH_KEY}\"]\n")
    binary = os.environ.get("SWITCHBOARD_BINARY", str(pathlib.Path(__file__).resolve().parents[2] / ".build/release/switchboard"))
    with tempfile.TemporaryDirectory() as directory:
        path = pathlib.Path(directory) / "clash.yaml"
        path.write_text(clash % BOTH_KEYS)
        result = subprocess.run([binary, "run", str(path), "--host", "127.0.0.1", "--port", "0"], capture_output=True, text=True,
                                timeout=30, env=dict(os.environ, SWITCHBOARD_PUBLISH_KEY=PUBLISH_KEY))
        assert result.returncode != 0
        assert "route POST /metrics is taken by a built-in route" in result.stdout + result.stderr, result.stdout + result.stderr

    gateway = start_gateway(BASE % BOTH_KEYS, name="shadow")
    try:
        pathlib.Path(gateway.config).write_text((BASE % BOTH_KEYS).replace(
            "    keys: [\"${SWITCHBOARD_PUBLISH_KEY}\"]\n",
            "    keys: [\"${SWITCHBOARD_PUBLISH_KEY}\"]\n  - name: shadow\n    plugin: webhook\n    path: /keep\n    keys: [\"${SWITCHBOARD_PUBLISH_KEY}\"]\n", 1))
        status, body = http(gateway, "POST", "/admin/reload")
        assert status == 422, body
        assert "source 'shadow': route POST /keep is taken by endpoint /keep" in body["errors"], body
        with urllib.request.urlopen("http://%s/metrics" % gateway.address, timeout=10) as response:
            assert response.status == 200 and b"switchboard_" in response.read()
    finally:
        stop_gateway(gateway)


def test_an_upgrade_admitted_by_the_old_filters_after_a_reload_is_closed_to_reconnect():
    """The filters of an upgrade run while a reload replaces them (here: a JWKS fetch that
    takes 2 s): the connection they admit belongs to the old configuration, which the reload
    never saw, so it is closed with 1001 to reconnect under the new one."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    keys = {"j1": rsa.generate_private_key(public_exponent=65537, key_size=2048),
            "j2": rsa.generate_private_key(public_exponent=65537, key_size=2048)}
    state = {"served": ["j1"], "slow_once": False}
    slow_fetch_arrived = threading.Event()

    def jwk(kid):
        value = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(keys[kid].public_key()))
        value.update({"kid": kid, "use": "sig", "alg": "RS256"})
        return value

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if state["slow_once"]:
                state["slow_once"] = False
                slow_fetch_arrived.set()
                time.sleep(5)
            body = json.dumps({"keys": [jwk(kid) for kid in state["served"]]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config_text = """
endpoints:
  - path: /slow
    encoders: [json]
    topics: ["*"]
    filters:
      - plugin: jwt
        issuer: https://issuer.test
        leeway: %s
        jwks_url: "http://127.0.0.1:{port}/jwks.json"
        jwks_min_refetch: 1s
""".replace("{port}", str(server.server_address[1]))
    gateway = start_gateway(config_text % "0s", name="late-upgrade")
    try:
        time.sleep(1.2)  # past jwks_min_refetch since the start-up fetch
        state["served"] = ["j1", "j2"]
        state["slow_once"] = True
        now = int(time.time())
        value = jwt.encode({"iss": "https://issuer.test", "sub": "late", "iat": now, "exp": now + 300},
                           keys["j2"], algorithm="RS256", headers={"kid": "j2"})
        result = {}

        def connect_late():
            try:
                with websockets.sync.client.connect("ws://%s/slow" % gateway.address, open_timeout=20,
                                                    additional_headers={"Authorization": "Bearer " + value}) as ws:
                    result["opened_at"] = time.time()
                    while True:
                        ws.recv(timeout=10)
            except websockets.ConnectionClosed as closed:
                result["close"] = closed.rcvd
            except Exception as error:  # noqa: BLE001 — recorded for the assertion
                result["error"] = error

        thread = threading.Thread(target=connect_late, daemon=True)
        thread.start()
        # The upgrade now waits 5 s for the slow JWKS fetch; the reload happens meanwhile.
        assert slow_fetch_arrived.wait(timeout=10), "the upgrade never fetched the JWKS"
        pathlib.Path(gateway.config).write_text(config_text % "1s")
        status, body = http(gateway, "POST", "/admin/reload")
        assert status == 200, body
        assert "endpoint /slow filters changed (0 connections admitted again, 0 closed)" in body["changes"], body
        thread.join(timeout=25)
        assert "opened_at" in result, result
        close = result.get("close")
        assert close is not None and close.code == 1001, result
        assert "changed by a configuration reload" in close.reason, close.reason
    finally:
        stop_gateway(gateway)
        server.shutdown()


def test_a_request_under_way_when_the_drain_starts_does_not_hold_the_shutdown():
    """A connection whose first request is still arriving when SIGTERM comes gets its
    answer, then is closed (not kept alive until idle_timeout), so the process exits."""
    import socket
    gateway = start_gateway(BASE.replace("shutdown: {drain: 1s}", "shutdown: {drain: 500ms, grace: 1s}") % BOTH_KEYS, name="half-request")
    try:
        host, port = gateway.address.split(":")
        sock = socket.create_connection((host, int(port)), timeout=10)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # the head is not complete yet
        time.sleep(0.3)
        started = time.time()
        gateway.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        sock.sendall(b"Connection: keep-alive\r\n\r\n")
        answer = b""
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break  # the server closed the connection after answering
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200"), answer
        sock.close()
        assert gateway.process.wait(timeout=10) == 0
        assert time.time() - started < 8, "the shutdown waited for the kept-alive connection"
    finally:
        if gateway.process.poll() is None:
            gateway.process.kill()
