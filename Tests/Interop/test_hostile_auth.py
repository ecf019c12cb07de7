"""The hostile-case table for the filters (issue 4): tokens made by PyJWT and
`cryptography`, never by our code; every case asserts the exact HTTP status or close
code, and that nothing got subscribed. At the end the gateway's log must not contain a
single token or secret that was used."""
import asyncio
import base64
import http.server
import json
import pathlib
import tempfile
import threading
import time
import urllib.request

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from conftest import start_gateway, stop_gateway

SECRET_A = "issuer-a-secret-0123456789abcdef0123456789"
SECRET_B = "issuer-b-secret-fedcba9876543210fedcba9876"
ISS_A = "https://issuer-a.test"
ISS_B = "https://issuer-b.test"
ISS_RSA = "https://issuer-rsa.test"
ISS_EC = "https://issuer-ec.test"
ISS_ED = "https://issuer-ed.test"
ISS_JWKS = "https://issuer-jwks.test"
AUDIENCE = "switchboard"


def pem_public(key):
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_OTHER = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
EC_OTHER = ec.generate_private_key(ec.SECP256R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()
JWKS_KEY_1 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
JWKS_KEY_2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)

USED_SECRETS = [SECRET_A, SECRET_B]


def claims(iss=ISS_A, sub="alice", roles=("viewer",), aud=AUDIENCE, exp_in=300, **extra):
    now = int(time.time())
    body = {"iss": iss, "sub": sub, "roles": list(roles), "iat": now, "exp": now + exp_in}
    if aud is not None:
        body["aud"] = aud
    for name, value in extra.items():
        if value is None:
            body.pop(name, None)
        else:
            body[name] = value
    return body


def token(body, key=SECRET_A, algorithm="HS256", kid="a1"):
    headers = {"kid": kid} if kid else None
    value = jwt.encode(body, key, algorithm=algorithm, headers=headers)
    USED_SECRETS.append(value)
    return value


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header, body, signature=b""):
    value = "%s.%s.%s" % (b64(json.dumps(header).encode()), b64(json.dumps(body).encode()), b64(signature))
    USED_SECRETS.append(value)
    return value


class JWKSServer:
    """Serves a JWKS on loopback; keys can be rotated while the gateway runs."""

    def __init__(self):
        self.keys = [self.jwk(JWKS_KEY_1, "j1")]
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = json.dumps({"keys": server.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @staticmethod
    def jwk(key, kid):
        value = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        value.update({"kid": kid, "use": "sig", "alg": "RS256"})
        return value


CONFIG = """
sources:
  - name: publish
    plugin: webhook
    keys: ["${SWITCHBOARD_PUBLISH_KEY}"]
endpoints:
  - path: /mixed
    topics: ["*"]
    subscribe: [secret]
    filters:
      - plugin: jwt
        audience: switchboard
        leeway: 1s
        algorithms: [HS256, RS256, ES256, EdDSA]
        issuers:
          - issuer: https://issuer-a.test
            keys: [{kid: a1, algorithm: HS256, secret: "${SECRET_A}"}]
          - issuer: https://issuer-b.test
            keys: [{kid: b1, algorithm: HS256, secret: "${SECRET_B}"}]
          - issuer: https://issuer-rsa.test
            keys: [{kid: r1, algorithm: RS256, public_key_file: "${KEY_DIR}/rsa.pem"}]
          - issuer: https://issuer-ec.test
            keys: [{kid: e1, algorithm: ES256, public_key_file: "${KEY_DIR}/ec.pem"}]
          - issuer: https://issuer-ed.test
            keys: [{algorithm: EdDSA, public_key_file: "${KEY_DIR}/ed.pem"}]
          - issuer: https://issuer-jwks.test
            jwks_url: "http://127.0.0.1:${JWKS_PORT}/jwks.json"
            jwks_min_refetch: 1s
  - path: /admin
    topics: ["*"]
    subscribe: [secret]
    filters:
      - plugin: jwt
        issuer: https://issuer-a.test
        audience: switchboard
        keys: [{kid: a1, algorithm: HS256, secret: "${SECRET_A}"}]
        token_from: [header]
        require_roles: [admin]
  - path: /scoped
    topics: ["*"]
    filters:
      - plugin: jwt
        issuer: https://issuer-a.test
        audience: switchboard
        leeway: 1s
        keys: [{kid: a1, algorithm: HS256, secret: "${SECRET_A}"}]
  - path: /origin
    topics: ["*"]
    subscribe: [secret]
    filters:
      - plugin: origin
        allow: ["https://app.example.com", "https://*.example.com"]
  - path: /flood
    topics: ["*"]
    subscribe: [secret]
    filters:
      - plugin: rate_limit
        connect_rate: 1
        connect_burst: 3
        message_rate: 2
        message_burst: 2
        max_violations: 3
  - path: /concurrent
    topics: ["*"]
    subscribe: [secret]
    filters:
      - plugin: rate_limit
        max_connections_per_ip: 2
"""


@pytest.fixture(scope="module")
def env():
    directory = pathlib.Path(tempfile.mkdtemp())
    (directory / "rsa.pem").write_text(pem_public(RSA_KEY))
    (directory / "ec.pem").write_text(pem_public(EC_KEY))
    (directory / "ed.pem").write_text(pem_public(ED_KEY))
    jwks = JWKSServer()
    running = start_gateway(CONFIG, {
        "SECRET_A": SECRET_A, "SECRET_B": SECRET_B, "KEY_DIR": str(directory), "JWKS_PORT": str(jwks.port),
    }, name="hostile")
    yield running, jwks
    stop_gateway(running)
    log = running.log.read_text()
    assert "jwt denied" in log  # denials are logged …
    for secret in USED_SECRETS:  # … but never a token or a key
        assert secret not in log


def subscribers(gateway, topic="secret"):
    return gateway.stats()["subscribers"].get(topic, 0)


async def attempt(gateway, path, headers=None, subprotocols=None, origin=None, query="", with_reason=False):
    """Opens a WebSocket; returns ("http", status[, message]) when refused, or ("open", ws)."""
    try:
        ws = await connect(gateway.url(path) + query, additional_headers=headers or {},
                           subprotocols=subprotocols, origin=origin, open_timeout=5)
    except InvalidStatus as refused:
        if with_reason:
            body = json.loads(refused.response.body)
            return ("http", refused.response.status_code, body["error"]["message"])
        return ("http", refused.response.status_code)
    return ("open", ws)


def expect_status(gateway, path, status, reason, **options):
    async def run():
        outcome = await attempt(gateway, path, with_reason=True, **options)
        if outcome[0] == "open":
            await outcome[1].close()
        return outcome
    before = subscribers(gateway)
    outcome = asyncio.run(run())
    assert outcome == ("http", status, reason)
    assert subscribers(gateway) == before == 0


def bearer(value):
    return {"Authorization": "Bearer " + value}


# Each entry: (case, path, expected HTTP status, expected refusal message, connect options).
def jwt_cases():
    now = int(time.time())
    valid_a = claims()
    return [
        ("missing token", "/mixed", 401, "missing token", {}),
        ("expired", "/mixed", 401, "token expired", {"headers": bearer(token(claims(exp_in=-60)))}),
        ("not yet valid", "/mixed", 401, "token not yet valid", {"headers": bearer(token(claims(nbf=now + 600)))}),
        ("issued in the future", "/mixed", 401, "token issued in the future", {"headers": bearer(token(claims(iat=now + 600)))}),
        ("wrong audience", "/mixed", 401, "wrong audience", {"headers": bearer(token(claims(aud="someone-else")))}),
        ("no audience", "/mixed", 401, "wrong audience", {"headers": bearer(token(claims(aud=None)))}),
        ("unknown issuer", "/mixed", 401, "unknown issuer", {"headers": bearer(token(claims(iss="https://evil.test")))}),
        ("no expiry", "/mixed", 401, "token has no expiry", {"headers": bearer(token(claims(exp=None)))}),
        ("exp as a string", "/mixed", 401, "malformed exp claim", {"headers": bearer(token(claims(exp=str(now + 600))))}),
        ("alg none (PyJWT)", "/mixed", 401, "algorithm none is not accepted", {"headers": bearer(token(valid_a, key=None, algorithm="none"))}),
        ("alg None, empty signature", "/mixed", 401, "algorithm none is not accepted", {"headers": bearer(hand_made({"alg": "None", "kid": "a1"}, valid_a))}),
        ("HS256 signed with the RSA public key (kid r1)", "/mixed", 401, "algorithm does not match the key",
         {"headers": bearer(hs256_with_public_key(claims(iss=ISS_RSA), kid="r1"))}),
        ("HS256 signed with the RSA public key (no kid)", "/mixed", 401, "algorithm does not match the key",
         {"headers": bearer(hs256_with_public_key(claims(iss=ISS_RSA), kid=None))}),
        ("tampered payload", "/mixed", 401, "invalid signature", {"headers": bearer(tampered(token(valid_a)))}),
        ("truncated token", "/mixed", 401, "invalid signature", {"headers": bearer(token(valid_a)[:-11])}),
        ("non-canonical base64url signature (same bytes, spare bits set)", "/mixed", 401, "malformed token",
         {"headers": bearer(non_canonical(token(valid_a)))}),
        ("two segments", "/mixed", 401, "malformed token", {"headers": bearer(".".join(token(valid_a).split(".")[:2]))}),
        ("not base64url", "/mixed", 401, "malformed token", {"headers": bearer("@@@.###.$$$")}),
        ("oversized token", "/mixed", 401, "token too large", {"headers": bearer(token(claims(pad="x" * 12000)))}),
        ("unknown kid", "/mixed", 401, "unknown key id", {"headers": bearer(token(valid_a, kid="a9"))}),
        ("second issuer's key (its kid)", "/mixed", 401, "unknown key id", {"headers": bearer(token(valid_a, key=SECRET_B, kid="b1"))}),
        ("second issuer's key (no kid)", "/mixed", 401, "invalid signature", {"headers": bearer(token(valid_a, key=SECRET_B, kid=None))}),
        ("RS256 by another RSA key", "/mixed", 401, "invalid signature",
         {"headers": bearer(token(claims(iss=ISS_RSA), key=RSA_OTHER, algorithm="RS256", kid="r1"))}),
        ("ES256 by another EC key", "/mixed", 401, "invalid signature",
         {"headers": bearer(token(claims(iss=ISS_EC), key=EC_OTHER, algorithm="ES256", kid="e1"))}),
        ("ES256 key, RS256 token", "/mixed", 401, "algorithm does not match the key",
         {"headers": bearer(token(claims(iss=ISS_EC), key=RSA_KEY, algorithm="RS256", kid="e1"))}),
        ("JWKS: unknown kid after refetch", "/mixed", 401, "unknown key id",
         {"headers": bearer(token(claims(iss=ISS_JWKS), key=JWKS_KEY_2, algorithm="RS256", kid="j9"))}),
        ("HS512 not on the allowlist", "/mixed", 401, "algorithm not allowed", {"headers": bearer(token(valid_a, key=SECRET_A * 2, algorithm="HS512"))}),
        ("token in a cookie", "/mixed", 401, "missing token", {"headers": {"Cookie": "token=" + token(valid_a)}}),
        ("token as Basic credentials", "/mixed", 401, "missing token", {"headers": {"Authorization": "Basic " + token(valid_a)}}),
        ("token in X-Token", "/mixed", 401, "missing token", {"headers": {"X-Token": token(valid_a)}}),
        ("subprotocol entry with an expired token", "/mixed", 401, "token expired",
         {"subprotocols": ["switchboard.json", "bearer." + token(claims(exp_in=-60))]}),
        ("token in the query where only the header is read", "/admin", 401, "missing token", {"query": "?token=" + token(claims(roles=["admin"]))}),
        ("valid token without the admin role", "/admin", 403, "missing required role", {"headers": bearer(token(claims(roles=["viewer"])))}),
        ("lookalike origin example.com.evil.io", "/origin", 403, "origin not allowed", {"origin": "https://example.com.evil.io"}),
        ("lookalike origin evilexample.com", "/origin", 403, "origin not allowed", {"origin": "https://evilexample.com"}),
        ("origin with the wrong scheme", "/origin", 403, "origin not allowed", {"origin": "http://app.example.com"}),
        ("missing origin", "/origin", 403, "missing Origin header", {}),
    ]


def hs256_with_public_key(body, kid):
    """The classic key-confusion attack: HMAC keyed with the RSA public key's PEM bytes."""
    header = {"alg": "HS256", "typ": "JWT"}
    if kid:
        header["kid"] = kid
    signing_input = "%s.%s" % (b64(json.dumps(header).encode()), b64(json.dumps(body).encode()))
    import hashlib
    import hmac
    signature = hmac.new(pem_public(RSA_KEY).encode(), signing_input.encode(), hashlib.sha256).digest()
    value = signing_input + "." + b64(signature)
    USED_SECRETS.append(value)
    return value


def non_canonical(value):
    """Sets the unused low bits of the signature's last character: standard base64
    decoders accept it as the same bytes; a strict one must not."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(value[-1])
    changed = value[:-1] + alphabet[last | 0b01]
    assert changed != value or alphabet[last | 0b10] != value[-1]
    if changed == value:
        changed = value[:-1] + alphabet[last | 0b10]
    USED_SECRETS.append(changed)
    return changed


def tampered(value):
    header, payload, signature = value.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body["roles"] = ["admin"]
    return "%s.%s.%s" % (header, b64(json.dumps(body).encode()), signature)


def test_hostile_table(env):
    gateway, _ = env
    cases = jwt_cases()
    assert len(cases) >= 30
    failures = []
    for name, path, status, reason, options in cases:
        try:
            expect_status(gateway, path, status, reason, **options)
        except AssertionError as error:
            failures.append("%s: %s" % (name, error))
    assert not failures, "\n".join(failures)
    filters = gateway.stats()["connections"]["per_endpoint"]["/mixed"]["filters"]
    denied = filters[0]["denied"]
    assert denied["missing token"] == 4  # none, cookie, Basic, X-Token
    assert denied["token expired"] == 2
    assert denied["algorithm none is not accepted"] == 2


def receive_secret(gateway, ws):
    """Publishes on `secret` and returns what `ws` receives."""
    async def run():
        gateway.publish(json.dumps({"topic": "secret", "type": "s", "data": 1}))
        return json.loads(await asyncio.wait_for(ws.recv(), 5))
    return run()


@pytest.mark.parametrize("label,path,options", [
    ("HS256 by header", "/mixed", lambda: {"headers": bearer(token(claims()))}),
    ("HS256 by query", "/mixed", lambda: {"query": "?token=" + token(claims())}),
    ("HS256 by subprotocol", "/mixed", lambda: {"subprotocols": ["switchboard.json", "bearer." + token(claims())]}),
    ("RS256", "/mixed", lambda: {"headers": bearer(token(claims(iss=ISS_RSA), key=RSA_KEY, algorithm="RS256", kid="r1"))}),
    ("ES256", "/mixed", lambda: {"headers": bearer(token(claims(iss=ISS_EC), key=EC_KEY, algorithm="ES256", kid="e1"))}),
    ("EdDSA", "/mixed", lambda: {"headers": bearer(token(claims(iss=ISS_ED), key=ED_KEY, algorithm="EdDSA", kid=None))}),
    ("JWKS key", "/mixed", lambda: {"headers": bearer(token(claims(iss=ISS_JWKS), key=JWKS_KEY_1, algorithm="RS256", kid="j1"))}),
    ("admin", "/admin", lambda: {"headers": bearer(token(claims(roles=["admin"])))}),
    ("allowed origin", "/origin", lambda: {"origin": "https://app.example.com"}),
    ("allowed wildcard origin", "/origin", lambda: {"origin": "https://eu.example.com"}),
])
def test_controls_are_admitted(env, label, path, options):
    gateway, _ = env

    async def run():
        outcome = await attempt(gateway, path, **options())
        assert outcome[0] == "open", (label, outcome)
        ws = outcome[1]
        try:
            message = await receive_secret(gateway, ws)
            assert (message["type"], message["data"]) == ("s", 1)
        finally:
            await ws.close()
    asyncio.run(run())


def test_jwks_rotation_is_picked_up_on_unknown_kid(env):
    gateway, jwks = env
    jwks.keys.append(JWKSServer.jwk(JWKS_KEY_2, "j2"))

    async def run():
        value = token(claims(iss=ISS_JWKS), key=JWKS_KEY_2, algorithm="RS256", kid="j2")
        for _ in range(10):  # unknown kids refetch at most every jwks_min_refetch
            outcome = await attempt(gateway, "/mixed", headers=bearer(value))
            if outcome[0] == "open":
                await outcome[1].close()
                return
            assert outcome == ("http", 401)
            await asyncio.sleep(1)
        raise AssertionError("rotated key never accepted")
    asyncio.run(run())


def test_connection_flood_from_one_address(env):
    gateway, _ = env

    async def run():
        outcomes = []
        for _ in range(8):
            try:
                ws = await connect(gateway.url("/flood"), open_timeout=5)
                outcomes.append(101)
                await ws.close()
            except InvalidStatus as refused:
                outcomes.append(refused.response.status_code)
                assert int(refused.response.headers["Retry-After"]) >= 1
        return outcomes
    outcomes = asyncio.run(run())
    assert outcomes[:3] == [101, 101, 101]
    assert outcomes.count(429) >= 4, outcomes
    assert subscribers(gateway) == 0


def test_concurrent_connections_per_address(env):
    gateway, _ = env

    async def run():
        first = await connect(gateway.url("/concurrent"))
        second = await connect(gateway.url("/concurrent"))
        try:
            with pytest.raises(InvalidStatus) as refused:
                await connect(gateway.url("/concurrent"))
            assert refused.value.response.status_code == 429
            assert subscribers(gateway) == 2
        finally:
            await first.close()
            await second.close()
    asyncio.run(run())


def test_message_flood_is_closed_with_1008(env):
    gateway, _ = env

    async def run():
        time.sleep(3.5)  # let the connect bucket of /flood refill
        ws = await connect(gateway.url("/flood"))
        replies = []
        with pytest.raises(ConnectionClosed) as closed:
            for _ in range(50):
                await ws.send(json.dumps({"type": "ping"}))
            while True:
                replies.append(json.loads(await asyncio.wait_for(ws.recv(), 5)))
        assert closed.value.rcvd.code == 1008
        assert closed.value.rcvd.reason == "message rate exceeded"
        assert any(r["type"] == "error" and r["data"]["code"] == "rate_limited" for r in replies)
    asyncio.run(run())
    time.sleep(0.2)
    assert subscribers(gateway) == 0


def test_forbidden_topic_from_the_token(env):
    gateway, _ = env

    async def run():
        value = token(claims(topics=["metrics", "jobs:*"]))
        async with connect(gateway.url("/scoped"), additional_headers=bearer(value)) as ws:
            await ws.send(json.dumps({"type": "subscribe", "data": "secret"}))
            reply = json.loads(await ws.recv())
            assert reply["type"] == "error" and reply["data"]["code"] == "forbidden"
            assert subscribers(gateway) == 0
            await ws.send(json.dumps({"type": "subscribe", "data": "jobs:42"}))
            assert json.loads(await ws.recv())["type"] == "subscribed"
            assert subscribers(gateway, "jobs:42") == 1
    asyncio.run(run())


def test_expired_token_closes_within_a_second(env):
    gateway, _ = env

    async def run():
        exp = int(time.time()) + 2
        value = token(claims(exp=exp))
        async with connect(gateway.url("/scoped"), additional_headers=bearer(value)) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            closed_at = time.time()
        assert closed.value.rcvd.code == 1008
        assert closed.value.rcvd.reason == "token expired"
        # leeway is 1 s on /scoped: closed at exp + 1, within a second.
        assert exp + 1 - 0.05 <= closed_at <= exp + 2, (exp, closed_at)
    asyncio.run(run())


def test_refresh_extends_the_connection(env):
    gateway, _ = env

    async def run():
        first_exp = int(time.time()) + 2
        async with connect(gateway.url("/scoped"), additional_headers=bearer(token(claims(exp=first_exp)))) as ws:
            # A token for someone else and a forged one are refused; the connection stays.
            await ws.send(json.dumps({"type": "refresh", "data": token(claims(sub="mallory", exp=first_exp + 60))}))
            reply = json.loads(await ws.recv())
            assert reply["type"] == "error" and reply["data"]["code"] == "refresh_failed"
            await ws.send(json.dumps({"type": "refresh", "data": token(claims(exp=first_exp + 60), key=SECRET_B)}))
            reply = json.loads(await ws.recv())
            assert reply["type"] == "error" and reply["data"] == {"code": "refresh_failed", "message": "invalid signature"}
            second_exp = first_exp + 3
            await ws.send(json.dumps({"type": "refresh", "data": token(claims(exp=second_exp))}))
            reply = json.loads(await ws.recv())
            assert reply["type"] == "refreshed" and reply["data"]["expires_at"] == second_exp + 1
            await asyncio.sleep(first_exp + 1.5 - time.time())
            await ws.send(json.dumps({"type": "ping"}))
            assert json.loads(await ws.recv())["type"] == "pong"  # still open past the first expiry
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            closed_at = time.time()
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "token expired")
        assert second_exp + 1 - 0.05 <= closed_at <= second_exp + 2
    asyncio.run(run())
