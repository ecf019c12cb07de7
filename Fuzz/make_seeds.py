#!/usr/bin/env python3
"""Writes the seed corpora under Fuzz/corpus/<target>/ (run from anywhere: python3 Fuzz/make_seeds.py).

Seeds are small, meaningful inputs: valid messages from Docs/protocol.md, edge cases and
known-bad inputs. Binary formats are written byte by byte here so each seed says what it
is; deflate streams come from Python's zlib (raw deflate, wbits < 0). Only the standard
library is used. The output is deterministic: rerunning rewrites the same files.

Targets with control bytes in front of the data (see each Fuzz/Sources/Fuzz*.swift):
  resp           2 bytes: cut position, parser limits (0xff = generous)
  inflate        3 bytes: flags (window bits - 8, reset, two messages), limit/settings, cut/level
  deflate-offer  1 byte:  endpoint policy
  websocket-wire 1 byte:  frame limit (bits 0-1), bytes per read - 1 (bits 2-7)
"""

import os
import shutil
import struct
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "Fuzz", "corpus")


def write(target, name, data):
    if isinstance(data, str):
        data = data.encode("utf-8")
    assert len(data) < 4096, (target, name, len(data))
    directory = os.path.join(CORPUS, target)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name), "wb") as handle:
        handle.write(data)


def reset(target):
    directory = os.path.join(CORPUS, target)
    if os.path.isdir(directory):
        shutil.rmtree(directory)
    os.makedirs(directory)


# MARK: json

def json_seeds():
    reset("json")
    write("json", "event-envelope", '{"type":"topic_created","topic":"topic:orders","timestamp":1704225600,"data":{"name":"orders","partitions":5}}')
    write("json", "nested-arrays", "[[[[[]]]],[[1,2],[3]],[],[[[{}]]]]")
    write("json", "unicode-escapes", r'["caf\u00e9","\u65e5\u672c","\u0000\u001f\u007f","\u00E9\u00e9"]')
    write("json", "surrogate-pairs", r'["\ud83d\ude00","\uD834\uDD1E","x\uDBFF\uDFFFy"]')
    write("json", "lone-high-surrogate", r'"\ud800"')
    write("json", "bad-low-surrogate", r'"\ud83d\u0041"')
    write("json", "lone-low-surrogate", r'"\udc00"')
    write("json", "numbers-exponents", "[1e10,-2.5E-3,0.0,-0,1E+2,0e0,-0.0e-0,1.5e-400,4.9e-324,1.7976931348623157e308]")
    write("json", "integers-edges", "[9223372036854775807,-9223372036854775808,9223372036854775808,-9223372036854775809,123456789012345678901234567890]")
    write("json", "number-overflow", "1e400")
    write("json", "escapes", r'"\"\\\/\b\f\n\r\t"')
    write("json", "whitespace-literals", ' \t\n\r{ "a" : [ true , false , null ] ,\n "b":{} } \n')
    write("json", "raw-utf8", '{"emoji":"\U0001F600","jp":"\u65e5\u672c\u8a9e","mixed":"a\u00e9\u4e2d"}')
    write("json", "duplicate-keys", '{"a":1,"a":2,"type":"x","type":"y"}')
    write("json", "depth-256", "[" * 256 + "]" * 256)
    write("json", "depth-257", "[" * 257 + "]" * 257)
    write("json", "trailing-data", '{"a":1} x')
    write("json", "invalid-utf8", b'["\xff\xfe","\xc3\x28","\xed\xa0\x80"]')
    write("json", "control-in-string", b'"a\x01b"')
    write("json", "leading-zero", "[01]")


# MARK: client-message

def client_message_seeds():
    reset("client-message")
    write("client-message", "subscribe", '{"type":"subscribe","data":"topic:my-topic","timestamp":1704225600}')
    write("client-message", "unsubscribe", '{"type":"unsubscribe","data":"topic:my-topic"}')
    write("client-message", "ping", '{"type":"ping"}')
    write("client-message", "refresh", '{"type":"refresh","data":"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyIiwiZXhwIjoxNzA0MjI5MjAwfQ.c2ln"}')
    write("client-message", "subscribe-topic-field", '{"type":"subscribe","topic":"orders:*"}')
    write("client-message", "subscribe-everything", '{"type":"subscribe","data":"*"}')
    write("client-message", "subscribe-bad-pattern", '{"type":"subscribe","data":"a*b"}')
    write("client-message", "subscribe-space", '{"type":"subscribe","data":"topic: x"}')
    write("client-message", "subscribe-unicode", r'{"type":"subscribe","data":"topic:caf\u00e9*"}')
    write("client-message", "subscribe-no-topic", '{"type":"subscribe"}')
    write("client-message", "subscribe-number-topic", '{"type":"subscribe","data":42}')
    write("client-message", "missing-type", '{"data":"topic:x"}')
    write("client-message", "type-not-string", '{"type":42}')
    write("client-message", "not-object", '["subscribe","topic:x"]')
    write("client-message", "last-type-wins", '{"type":"subscribe","data":"topic:x","type":"ping"}')
    write("client-message", "not-json", "subscribe topic:x")
    write("client-message", "unknown-type", '{"type":"publish","topic":"t","data":{"x":[1,2.5,null,true]}}')


# MARK: msgpack (hand-made bytes)

def mp_str(text):
    data = text.encode("utf-8")
    if len(data) < 32:
        return bytes([0xA0 | len(data)]) + data
    if len(data) < 256:
        return bytes([0xD9, len(data)]) + data
    return b"\xda" + struct.pack(">H", len(data)) + data


def mp_map(pairs):
    assert len(pairs) < 16
    return bytes([0x80 | len(pairs)]) + b"".join(mp_str(k) + v for k, v in pairs)


def msgpack_seeds():
    reset("msgpack")
    write("msgpack", "subscribe", mp_map([("type", mp_str("subscribe")), ("data", mp_str("topic:my-topic"))]))
    write("msgpack", "ping", mp_map([("type", mp_str("ping"))]))
    envelope = mp_map([
        ("type", mp_str("metrics")),
        ("topic", mp_str("metrics")),
        ("timestamp", b"\xce" + struct.pack(">I", 1704225600)),
        ("data", mp_map([("cpu", b"\xcb" + struct.pack(">d", 0.5))])),
    ])
    write("msgpack", "envelope", envelope)
    write("msgpack", "nested-arrays", bytes([0x93, 0x01, 0x92, 0x02, 0x90, 0xC0]))
    write("msgpack", "nil-true-false", bytes([0x93, 0xC0, 0xC3, 0xC2]))
    write("msgpack", "str8-str16-str32", bytes([0x93, 0xD9, 0x05]) + b"hello" + b"\xda\x00\x03abc" + b"\xdb\x00\x00\x00\x02" + "\u00e9".encode())
    write("msgpack", "bin8", bytes([0xC4, 0x03, 0x01, 0x02, 0x03]))
    write("msgpack", "ext-fixext1-ext8", bytes([0x92, 0xD4, 0x01, 0xFF, 0xC7, 0x02, 0x05, 0xAA, 0xBB]))
    write("msgpack", "float32-float64", b"\x93\xca" + struct.pack(">f", 1.5) + b"\xcb" + struct.pack(">d", 3.141592653589793) + b"\xcb" + struct.pack(">d", -0.0))
    write("msgpack", "float-nan-inf", b"\x92\xcb" + struct.pack(">d", float("nan")) + b"\xca" + struct.pack(">f", float("inf")))
    write("msgpack", "integers", bytes([0x98, 0x7F, 0xE0, 0xCC, 0xFF, 0xD0, 0x80]) + b"\xcd\xff\xff\xd1\x80\x00\xce\xff\xff\xff\xff\xd3\x80\x00\x00\x00\x00\x00\x00\x00")
    write("msgpack", "uint64-max", b"\xcf\xff\xff\xff\xff\xff\xff\xff\xff")
    write("msgpack", "map16-int-key", b"\xde\x00\x02\xa1a\x01\x02\x03")
    write("msgpack", "invalid-utf8", bytes([0x81, 0xA4]) + b"type" + bytes([0xA2, 0xFF, 0xFE]))
    write("msgpack", "truncated", bytes([0x92, 0x01]))
    write("msgpack", "array32-lies", bytes([0xDD, 0xFF, 0xFF, 0xFF, 0xFF, 0xC0]))
    write("msgpack", "never-used-c1", bytes([0xC1]))
    write("msgpack", "depth-32", bytes([0x91] * 32 + [0xC0]))
    write("msgpack", "depth-33", bytes([0x91] * 33 + [0xC0]))
    write("msgpack", "trailing-data", bytes([0xC0, 0xC0]))


# MARK: resp (2 control bytes: cut, limits)

def bulk(data):
    if isinstance(data, str):
        data = data.encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


def array(items, marker=b"*"):
    return marker + b"%d\r\n" % len(items) + b"".join(items)


def resp(name, cut, limits, data):
    write("resp", name, bytes([cut, limits]) + data)


def resp_seeds():
    reset("resp")
    generous = 0xFF
    resp("simple-string-error", 2, generous, b"+OK\r\n-ERR unknown command 'foo'\r\n")
    resp("integers", 7, generous, b":1000\r\n:-42\r\n:0\r\n")
    resp("bulk-strings", 9, generous, bulk("hello") + bulk("") + b"$-1\r\n")
    resp("subscribe-reply", 13, generous, array([bulk("subscribe"), bulk("orders"), b":1\r\n"]))
    resp("pubsub-message", 40, generous, array([bulk("message"), bulk("orders"), bulk('{"id":1,"x":2}')]))
    resp("null-array", 1, generous, b"*-1\r\n")
    resp("resp3-push", 17, generous, array([bulk("message"), bulk("foo"), bulk("bar")], b">"))
    resp("resp3-map", 11, generous, b"%2\r\n+first\r\n:1\r\n+second\r\n:2\r\n")
    resp("resp3-attribute", 30, generous, b"|1\r\n+key-popularity\r\n*2\r\n$1\r\na\r\n,0.1923\r\n*2\r\n:2039123\r\n:9543892\r\n")
    resp("resp3-big-number", 4, generous, b"(3492890328409238509324850943850943825024385\r\n(-12\r\n")
    resp("resp3-doubles", 6, generous, b",1.23\r\n,inf\r\n,-inf\r\n,nan\r\n,1e10\r\n,-0\r\n")
    resp("resp3-bool-null", 3, generous, b"#t\r\n#f\r\n_\r\n")
    resp("resp3-verbatim", 10, generous, b"=15\r\ntxt:Some string\r\n")
    resp("resp3-blob-error", 8, generous, b"!21\r\nSYNTAX invalid syntax\r\n")
    resp("resp3-set", 12, generous, b"~3\r\n+a\r\n+b\r\n+c\r\n")
    entry = array([bulk("1526985054069-0"), array([bulk("data"), bulk('{"a":1}')])])
    resp("xread-reply", 25, generous, array([array([bulk("stream"), array([entry])])]))
    resp("small-limits", 9, 0x00, array([bulk("hello"), b"*1\r\n*0\r\n"]))
    resp("bulk-bad-terminator", 6, generous, b"$5\r\nhel\r\nxx")
    resp("lf-without-cr", 2, generous, b"+OK\n")
    resp("unknown-type", 1, generous, b"?x\r\n")


# MARK: inflate (3 control bytes: flags, limit/settings, cut/level)

def raw_deflate(data, wbits=15, level=6, finish=False):
    compressor = zlib.compressobj(level, zlib.DEFLATED, -wbits)
    out = compressor.compress(data)
    if finish:
        return out + compressor.flush(zlib.Z_FINISH)
    out += compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]  # RFC 7692 section 7.2.1


def inflate_seeds():
    reset("inflate")
    # flags: bits 0-2 window bits - 8, bit 3 reset after each message, bit 4 two messages.
    # byte 1 bits 0-2: limit index into [0, 1, 64, 1000, 4096, 16384, 16385, 1 MiB].
    event = b'{"type":"metrics","topic":"metrics","timestamp":1704225600,"data":{"cpu":0.5,"mem":0.25}}'
    write("inflate", "hello", bytes([0x07, 0x07, 0x00]) + raw_deflate(b"Hello, Hello, Hello, Hello!"))
    write("inflate", "json-event", bytes([0x07, 0x04, 0x05]) + raw_deflate(event))
    write("inflate", "empty-message", bytes([0x07, 0x00, 0x00]) + raw_deflate(b""))
    write("inflate", "stored-block", bytes([0x07, 0x07, 0x00]) + raw_deflate(b"stored, not compressed", level=0))
    write("inflate", "window-9", bytes([0x01, 0x07, 0x00]) + raw_deflate(event * 3, wbits=9))
    write("inflate", "bomb-small-limit", bytes([0x07, 0x03, 0x08]) + raw_deflate(b"\x00" * 200000, level=9))
    write("inflate", "bomb-limit-16k", bytes([0x0F, 0x05, 0x08]) + raw_deflate(b"a" * 40000, level=9))
    write("inflate", "final-block", bytes([0x07, 0x07, 0x00]) + raw_deflate(b"with BFINAL set", finish=True))
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    first = compressor.compress(event) + compressor.flush(zlib.Z_SYNC_FLUSH)
    second = compressor.compress(event) + compressor.flush(zlib.Z_SYNC_FLUSH)
    first, second = first[:-4], second[:-4]
    assert len(first) < 256
    write("inflate", "context-takeover", bytes([0x17, 0x07, len(first)]) + first + second)
    write("inflate", "no-context-takeover", bytes([0x1F, 0x07, len(first)]) + first + raw_deflate(event))
    write("inflate", "corrupt", bytes([0x07, 0x07, 0x00]) + bytes([0xFF, 0xFF, 0xFF, 0x00, 0x12, 0x34]))
    write("inflate", "plain-text-roundtrip", bytes([0x17, 0x2E, 0x20]) + b"The payload itself goes through Deflater and back: " + event)


# MARK: config

CONFIG_MINIMAL = """\
listener:
  host: 127.0.0.1
  port: 8080
sources:
  - name: publish-api
    plugin: webhook
    path: /api/publish
    keys: ["${SWITCHBOARD_PUBLISH_KEY:-}"]
    topics: ["orders:*"]
endpoints:
  - path: /ws
    encoders: [json]
    topics: ["*"]
"""

CONFIG_TYPO = """\
listener:
  port: 8080
  hots: 0.0.0.0
sources:
  - name: hook
    plugin: webhook
    max_bdy: 1MiB
endpoints:
  - path: /ws
    encoders: [json, msgpack]
"""

CONFIG_ANCHORS = """\
defaults: &endpoint
  encoders: [json]
  topics: ["*"]
listener: {port: 8080}
sources:
  - {name: hook, plugin: webhook, keys: ["${UNSET_VARIABLE}", "${1BAD}", "${EMPTY:-fallback}"]}
endpoints:
  - <<: *endpoint
    path: /a
  - *endpoint
"""

CONFIG_BROKEN = """\
listener:
  port: [8080
sources: {a: 1, a: 2}
\t- tab
"""


def config_seeds():
    reset("config")
    for name in sorted(os.listdir(os.path.join(ROOT, "configs"))):
        if name.endswith(".yaml"):
            with open(os.path.join(ROOT, "configs", name), "rb") as handle:
                write("config", name, handle.read())
    write("config", "minimal-webhook.yaml", CONFIG_MINIMAL)
    write("config", "typos.yaml", CONFIG_TYPO)
    write("config", "anchors-env.yaml", CONFIG_ANCHORS)
    write("config", "broken.yaml", CONFIG_BROKEN)
    write("config", "empty.yaml", "")
    write("config", "scalar.yaml", "just a string\n")


# MARK: deflate-offer (1 control byte: policy)

def offer(name, policy, text):
    write("deflate-offer", name, bytes([policy]) + text.encode())


def deflate_offer_seeds():
    reset("deflate-offer")
    # policy byte: bit 0 dedicated, bits 1-3 server window - 9, bits 4-6 client window - 9.
    shared_15 = (6 << 1) | (6 << 4)
    dedicated_12 = 0x01 | (3 << 1) | (3 << 4)
    offer("bare", shared_15, "permessage-deflate")
    offer("client-max-window-bits", shared_15, "permessage-deflate; client_max_window_bits")
    offer("window-bits", dedicated_12, "permessage-deflate; server_max_window_bits=10; client_max_window_bits=12")
    offer("no-context-takeover", dedicated_12, "permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    offer("server-8-then-plain", shared_15, "permessage-deflate; server_max_window_bits=8, permessage-deflate")
    offer("client-8", dedicated_12, "permessage-deflate; client_max_window_bits=8")
    offer("quoted", shared_15, 'x-webkit-deflate-frame, permessage-deflate; client_max_window_bits="10"')
    offer("repeated-parameter", shared_15, "permessage-deflate; client_no_context_takeover; client_no_context_takeover")
    offer("two-headers", dedicated_12, "foo; bar=1\nPERMESSAGE-DEFLATE ; Server_Max_Window_Bits = 15")
    offer("unknown-parameter", shared_15, "permessage-deflate; foo=bar, permessage-deflate")
    offer("quoted-comma", shared_15, 'permessage-deflate; x="a,b;c", permessage-deflate;client_max_window_bits=09')


def client_frame(opcode, payload, fin=True, key=b"\x01\x02\x03\x04", length_form=None):
    first = opcode | (0x80 if fin else 0)
    mask = 0x80 if key is not None else 0
    n = len(payload)
    form = length_form or ("short" if n < 126 else "word" if n <= 0xFFFF else "quad")
    if form == "short":
        header = struct.pack("!BB", first, mask | n)
    elif form == "word":
        header = struct.pack("!BBH", first, mask | 126, n)
    else:
        header = struct.pack("!BBQ", first, mask | 127, n)
    if key is None:
        return header + payload
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return header + key + masked


def wire_seeds():
    reset("websocket-wire")
    whole, bytewise = 0x01 | (63 << 2), 0x01
    write("websocket-wire", "text", bytes([whole]) + client_frame(0x1, b'{"type":"subscribe","data":"orders"}'))
    write("websocket-wire", "text-bytewise", bytes([bytewise]) + client_frame(0x1, b'{"type":"ping"}'))
    write("websocket-wire", "fragments", bytes([0x01 | (6 << 2)]) + client_frame(0x1, b"ab", fin=False) + client_frame(0x9, b"") + client_frame(0x0, b"cd"))
    write("websocket-wire", "word-length", bytes([0x02 | (31 << 2)]) + client_frame(0x2, bytes(300)))
    write("websocket-wire", "quad-length", bytes([0x02 | (63 << 2)]) + client_frame(0x2, bytes(200), length_form="quad"))
    write("websocket-wire", "too-big", bytes([0x00 | (3 << 2)]) + client_frame(0x2, bytes(200)))
    write("websocket-wire", "top-bit-length", bytes([whole]) + struct.pack("!BBQ", 0x82, 0xFF, 1 << 63) + b"\x01\x02\x03\x04")
    write("websocket-wire", "long-ping", bytes([whole]) + client_frame(0x9, bytes(126)))
    write("websocket-wire", "fragmented-ping", bytes([whole]) + client_frame(0x9, b"x", fin=False))
    write("websocket-wire", "unmasked", bytes([whole]) + client_frame(0x1, b"hello", key=None))
    write("websocket-wire", "close", bytes([bytewise]) + client_frame(0x8, struct.pack("!H", 1000) + b"bye"))
    write("websocket-wire", "two-in-one-read", bytes([whole]) + client_frame(0x1, b"a") + client_frame(0xA, b"p"))


if __name__ == "__main__":
    json_seeds()
    client_message_seeds()
    msgpack_seeds()
    resp_seeds()
    inflate_seeds()
    config_seeds()
    deflate_offer_seeds()
    wire_seeds()
    total = 0
    for directory, _, files in os.walk(CORPUS):
        for name in files:
            total += os.path.getsize(os.path.join(directory, name))
    print("seed corpus: %d bytes under %s" % (total, os.path.relpath(CORPUS, ROOT)))
