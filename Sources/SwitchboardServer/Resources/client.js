/* Switchboard browser client: a dependency-free classic script served by the gateway at
 * /client.js. It defines globalThis.Switchboard = {Client, msgpack, version}.
 * Protocol: Docs/protocol.md. Usage: Docs/client.md. */
(function (root) {
  "use strict";

  // ---------------------------------------------------------------- MessagePack

  var utf8Encoder = new TextEncoder();
  var utf8Decoder = new TextDecoder("utf-8", { fatal: true });
  var MAX_DEPTH = 64;

  /** Encodes a JSON-like value (plus Uint8Array as bin and BigInt as int64/uint64). */
  function encode(value) {
    var out = [];
    var scratch = new DataView(new ArrayBuffer(8));
    function bytes(n) { for (var i = 0; i < n; i++) out.push(scratch.getUint8(i)); }
    function head(small, tag8, tag16, tag32, length, smallLimit) {
      if (length < smallLimit) out.push(small | length);
      else if (tag8 !== null && length < 0x100) out.push(tag8, length);
      else if (length < 0x10000) { out.push(tag16); scratch.setUint16(0, length); bytes(2); }
      else { out.push(tag32); scratch.setUint32(0, length); bytes(4); }
    }
    function integer(n) {
      if (n >= 0) {
        if (n < 0x80) out.push(n);
        else if (n < 0x100) out.push(0xcc, n);
        else if (n < 0x10000) { out.push(0xcd); scratch.setUint16(0, n); bytes(2); }
        else if (n < 0x100000000) { out.push(0xce); scratch.setUint32(0, n); bytes(4); }
        else { out.push(0xcf); scratch.setBigUint64(0, BigInt(n)); bytes(8); }
      } else {
        if (n >= -32) out.push(n & 0xff);
        else if (n >= -0x80) { out.push(0xd0); scratch.setInt8(0, n); bytes(1); }
        else if (n >= -0x8000) { out.push(0xd1); scratch.setInt16(0, n); bytes(2); }
        else if (n >= -0x80000000) { out.push(0xd2); scratch.setInt32(0, n); bytes(4); }
        else { out.push(0xd3); scratch.setBigInt64(0, BigInt(n)); bytes(8); }
      }
    }
    function write(v, depth) {
      if (depth > MAX_DEPTH) throw new Error("msgpack: nesting too deep");
      if (v === null || v === undefined) out.push(0xc0);
      else if (v === false) out.push(0xc2);
      else if (v === true) out.push(0xc3);
      else if (typeof v === "number") {
        if (Number.isSafeInteger(v)) integer(v);
        else { out.push(0xcb); scratch.setFloat64(0, v); bytes(8); }
      } else if (typeof v === "bigint") {
        if (v >= 0n) { out.push(0xcf); scratch.setBigUint64(0, v); } else { out.push(0xd3); scratch.setBigInt64(0, v); }
        bytes(8);
      } else if (typeof v === "string") {
        var s = utf8Encoder.encode(v);
        head(0xa0, 0xd9, 0xda, 0xdb, s.length, 32);
        for (var i = 0; i < s.length; i++) out.push(s[i]);
      } else if (v instanceof Uint8Array) {
        head(0, 0xc4, 0xc5, 0xc6, v.length, 0);
        for (var j = 0; j < v.length; j++) out.push(v[j]);
      } else if (Array.isArray(v)) {
        head(0x90, null, 0xdc, 0xdd, v.length, 16);
        for (var k = 0; k < v.length; k++) write(v[k], depth + 1);
      } else if (typeof v === "object") {
        var keys = Object.keys(v).filter(function (key) { return v[key] !== undefined; });
        head(0x80, null, 0xde, 0xdf, keys.length, 16);
        keys.forEach(function (key) { write(key, depth + 1); write(v[key], depth + 1); });
      } else throw new Error("msgpack: cannot encode " + typeof v);
    }
    write(value, 0);
    return new Uint8Array(out);
  }

  /** Decodes one MessagePack value that fills `input` (ArrayBuffer or Uint8Array). Throws
   * an Error on truncated, trailing or malformed data; never reads out of bounds.
   * 64-bit integers become Numbers when safe, BigInts otherwise; bin is a Uint8Array;
   * ext becomes {ext: type, data: Uint8Array}. */
  function decode(input) {
    var u8 = input instanceof Uint8Array ? input : new Uint8Array(input);
    var view = new DataView(u8.buffer, u8.byteOffset, u8.byteLength);
    var pos = 0;
    function need(n) {
      if (pos + n > u8.length) throw new Error("msgpack: truncated at byte " + pos);
      var at = pos; pos += n; return at;
    }
    function int64(signed) {
      var at = need(8);
      var big = signed ? view.getBigInt64(at) : view.getBigUint64(at);
      var safe = big <= BigInt(Number.MAX_SAFE_INTEGER) && big >= BigInt(Number.MIN_SAFE_INTEGER);
      return safe ? Number(big) : big;
    }
    function str(n) { var at = need(n); return utf8Decoder.decode(u8.subarray(at, at + n)); }
    function bin(n) { var at = need(n); return u8.slice(at, at + n); }
    function count(n) {
      // Every element takes at least one byte: refuse impossible counts before allocating.
      if (n > u8.length - pos) throw new Error("msgpack: container claims more elements than the frame holds");
      return n;
    }
    function array(n, depth) {
      var a = new Array(count(n));
      for (var i = 0; i < n; i++) a[i] = read(depth + 1);
      return a;
    }
    function map(n, depth) {
      var o = {};
      count(n * 2);
      for (var i = 0; i < n; i++) {
        var key = read(depth + 1);
        if (typeof key !== "string") key = String(key);
        var value = read(depth + 1);
        // An own "__proto__" key as JSON.parse makes it, never a prototype change.
        if (key === "__proto__") Object.defineProperty(o, key, { value: value, enumerable: true, writable: true, configurable: true });
        else o[key] = value;
      }
      return o;
    }
    function ext(n) { var type = view.getInt8(need(1)); return { ext: type, data: bin(n) }; }
    function read(depth) {
      if (depth > MAX_DEPTH) throw new Error("msgpack: nesting too deep");
      var b = u8[need(1)];
      if (b < 0x80) return b;
      if (b < 0x90) return map(b & 0x0f, depth);
      if (b < 0xa0) return array(b & 0x0f, depth);
      if (b < 0xc0) return str(b & 0x1f);
      if (b >= 0xe0) return b - 0x100;
      switch (b) {
        case 0xc0: return null;
        case 0xc2: return false;
        case 0xc3: return true;
        case 0xc4: return bin(u8[need(1)]);
        case 0xc5: return bin(view.getUint16(need(2)));
        case 0xc6: return bin(view.getUint32(need(4)));
        case 0xc7: return ext(u8[need(1)]);
        case 0xc8: return ext(view.getUint16(need(2)));
        case 0xc9: return ext(view.getUint32(need(4)));
        case 0xca: return view.getFloat32(need(4));
        case 0xcb: return view.getFloat64(need(8));
        case 0xcc: return u8[need(1)];
        case 0xcd: return view.getUint16(need(2));
        case 0xce: return view.getUint32(need(4));
        case 0xcf: return int64(false);
        case 0xd0: return view.getInt8(need(1));
        case 0xd1: return view.getInt16(need(2));
        case 0xd2: return view.getInt32(need(4));
        case 0xd3: return int64(true);
        case 0xd4: return ext(1);
        case 0xd5: return ext(2);
        case 0xd6: return ext(4);
        case 0xd7: return ext(8);
        case 0xd8: return ext(16);
        case 0xd9: return str(u8[need(1)]);
        case 0xda: return str(view.getUint16(need(2)));
        case 0xdb: return str(view.getUint32(need(4)));
        case 0xdc: return array(view.getUint16(need(2)), depth);
        case 0xdd: return array(view.getUint32(need(4)), depth);
        case 0xde: return map(view.getUint16(need(2)), depth);
        case 0xdf: return map(view.getUint32(need(4)), depth);
        default: throw new Error("msgpack: unused type byte 0x" + b.toString(16) + " at byte " + (pos - 1));
      }
    }
    var value = read(0);
    if (pos !== u8.length) throw new Error("msgpack: " + (u8.length - pos) + " bytes after the value");
    return value;
  }

  // ---------------------------------------------------------------- helpers

  /** ws:// and wss:// pass; http(s) URLs and page-relative paths become ws(s). */
  function webSocketURL(url) {
    var base = root.location && root.location.href;
    var parsed = base ? new URL(url, base) : new URL(url);
    if (parsed.protocol === "http:") parsed.protocol = "ws:";
    else if (parsed.protocol === "https:") parsed.protocol = "wss:";
    else if (parsed.protocol !== "ws:" && parsed.protocol !== "wss:") throw new Error("Switchboard: not a WebSocket URL: " + url);
    parsed.hash = "";
    return parsed;
  }

  /** The `exp` claim (seconds) of a JWT, or null: used to schedule refreshes. */
  function jwtExpiry(token) {
    try {
      var part = String(token).split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      var exp = JSON.parse(atob(part + "===".slice((part.length + 3) % 4))).exp;
      return typeof exp === "number" ? exp : null;
    } catch (e) { return null; }
  }

  function isPattern(topic) { return topic.charAt(topic.length - 1) === "*"; }
  function report(error) { setTimeout(function () { throw error; }); } // a listener's bug stays its own

  // ---------------------------------------------------------------- Client

  var DEFAULTS = {
    format: "json",        // "json" | "msgpack": the switchboard.<format> subprotocol
    topics: [],            // subscribed on every (re)connect
    token: null,           // string, or function returning a string or a Promise of one
    tokenParam: "token",   // query parameter carrying the token
    refreshEvery: 0,       // ms between refreshes; 0: from the token's exp / refreshed reply
    minDelay: 500,         // backoff base (ms)
    maxDelay: 30000,       // backoff cap (ms)
    stableAfter: 10000,    // an open connection this old resets the backoff
    connect: true          // connect in the constructor
  };

  class Client {
    constructor(url, options) {
      this.options = Object.assign({}, DEFAULTS, options || {});
      if (this.options.format !== "json" && this.options.format !== "msgpack") throw new Error("Switchboard: format must be json or msgpack");
      this.url = webSocketURL(url).href;
      this.state = "closed";
      this.protocol = "";
      this.negotiatedExtensions = "";
      this.lastClose = null;        // {code, reason, wasClean} of the last socket
      this.retryDelay = null;       // ms until the next attempt while reconnecting
      this._ws = null;
      this._listeners = {};
      this._subs = new Map();       // topic -> {options, active, position, recovered, replayed, resumed}
      this._attempt = 0;
      this._timers = {};
      this._pings = [];
      this._wanted = false;         // false after close(): no reconnect
      this._reconnectNow = false;
      this.options.topics.forEach(function (topic) { this._entry(topic, {}); }, this);
      if (this.options.connect) this.connect();
    }

    // -- events: "event", "message", "state", "subscribed", "unsubscribed", "error",
    //    "refreshed", "pong"
    on(name, fn) {
      (this._listeners[name] = this._listeners[name] || []).push(fn);
      var self = this;
      return function () { self.off(name, fn); };
    }
    off(name, fn) {
      var list = this._listeners[name] || [];
      var i = list.indexOf(fn);
      if (i >= 0) list.splice(i, 1);
    }
    _emit(name, value, extra) {
      (this._listeners[name] || []).slice().forEach(function (fn) {
        try { fn(value, extra); } catch (error) { report(error); }
      });
    }
    _setState(state, detail) {
      var previous = this.state;
      this.state = state;
      this._emit("state", Object.assign({ state: state, previous: previous }, detail || {}));
    }

    // -- connection
    /** Opens the connection (again after close()); positions are kept for the resume. */
    connect() {
      this._wanted = true;
      if (this.state !== "closed") return; // already connecting, open or waiting to retry
      this._open("connecting");
    }

    /** Closes for good: no reconnect until connect() is called. */
    close(code, reason) {
      this._wanted = false;
      this._clearTimers();
      this.retryDelay = null;
      var ws = this._ws;
      this._ws = null;
      if (ws) { this._detach(ws); try { ws.close(code || 1000, reason || ""); } catch (e) { ws.close(); } }
      this._dropped();
      if (this.state !== "closed") this._setState("closed", { code: code || 1000, reason: reason || "closed by the client" });
    }

    /** Drops the current connection and reconnects at once, resuming every topic. */
    reconnect() {
      this._wanted = true;
      if (this._ws) { this._reconnectNow = true; this._ws.close(4000, "reconnect"); return; }
      clearTimeout(this._timers.retry); this._timers.retry = null;
      this._open("reconnecting");
    }

    async _open(state) {
      this._setState(state, { attempt: this._attempt });
      var url = new URL(this.url);
      var token = this.options.token;
      var generation = this._generation = (this._generation || 0) + 1;
      if (typeof token === "function") {
        try { token = await token(); } catch (error) {
          this._emit("error", { code: "token_unavailable", message: String(error && error.message || error) });
          if (generation === this._generation && this._wanted) this._retry({ code: 0, reason: "token function failed" });
          return;
        }
        if (generation !== this._generation || !this._wanted) return; // close() meanwhile
      }
      this._token = token || null;
      if (token) url.searchParams.set(this.options.tokenParam, token);
      var ws;
      try { ws = new WebSocket(url.href, ["switchboard." + this.options.format]); } catch (error) {
        this._emit("error", { code: "connect_failed", message: String(error.message || error) });
        this._wanted = false;
        this._setState("closed", { reason: String(error.message || error) });
        return;
      }
      ws.binaryType = "arraybuffer";
      this._ws = ws;
      var self = this;
      ws.onopen = function () { self._onOpen(ws); };
      ws.onmessage = function (event) { self._onFrame(event.data); };
      ws.onclose = function (event) { if (self._ws === ws) self._onClose(event); };
      ws.onerror = function () {}; // onclose follows with the code
    }

    _detach(ws) { ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null; }

    _onOpen(ws) {
      this.protocol = ws.protocol;
      this.negotiatedExtensions = ws.extensions;
      this.retryDelay = null;
      this._openedAt = Date.now();
      var self = this;
      this._timers.stable = setTimeout(function () { self._attempt = 0; }, this.options.stableAfter);
      this._setState("open", { protocol: ws.protocol, extensions: ws.extensions });
      this._subs.forEach(function (entry, topic) { self._sendSubscribe(topic, entry); });
      this._scheduleRefresh(jwtExpiry(this._token));
    }

    _onClose(event) {
      this._ws = null;
      this._clearTimers();
      this._dropped();
      this.lastClose = { code: event.code, reason: event.reason, wasClean: event.wasClean };
      var tokenRefused = event.code === 1008 && /token/i.test(event.reason);
      if (!this._wanted || (tokenRefused && typeof this.options.token !== "function")) {
        this._wanted = false;
        this._setState("closed", { code: event.code, reason: event.reason });
        return;
      }
      this._retry(event);
    }

    _retry(close) {
      var hint = close.code === 1001 && /reconnect_after_ms=(\d+)/.exec(close.reason || "");
      var delay;
      if (this._reconnectNow) delay = 0;
      else if (hint) delay = Number(hint[1]);          // the server already added jitter
      else {                                            // full jitter
        var cap = Math.min(this.options.maxDelay, this.options.minDelay * Math.pow(2, this._attempt));
        delay = Math.floor(Math.random() * cap);
        this._attempt++;
      }
      this._reconnectNow = false;
      this.retryDelay = delay;
      var self = this;
      this._timers.retry = setTimeout(function () { self._timers.retry = null; self._open("reconnecting"); }, delay);
      this._setState("reconnecting", { delay: delay, retryAt: Date.now() + delay, attempt: this._attempt, code: close.code, reason: close.reason });
    }

    _dropped() {
      this._subs.forEach(function (entry) { entry.active = false; });
      this._pings.splice(0).forEach(function (p) { p.reject(new Error("connection closed")); });
    }

    _clearTimers() {
      for (var name in this._timers) clearTimeout(this._timers[name]);
      this._timers = {};
    }

    // -- sending
    /** Sends one message object; false when not open. */
    send(message) {
      if (!this._ws || this._ws.readyState !== 1) return false;
      this._ws.send(this.options.format === "msgpack" ? encode(message) : JSON.stringify(message));
      return true;
    }

    /** Subscribes now or on the next open, and on every reconnect (with `since` when a
     * position of the exact topic is known). opts: {last: n} or {since: {epoch, offset}}. */
    subscribe(topic, opts) {
      var entry = this._entry(topic, opts || {});
      if (opts && opts.since) entry.position = opts.since;
      this._sendSubscribe(topic, entry);
    }

    unsubscribe(topic) {
      this._subs.delete(topic);
      this.send({ type: "unsubscribe", data: topic });
    }

    /** Sends a ping; resolves with the round trip in ms when the pong arrives. */
    ping() {
      var self = this;
      return new Promise(function (resolve, reject) {
        var started = Date.now();
        if (!self.send({ type: "ping" })) return reject(new Error("not connected"));
        self._pings.push({ resolve: function () { resolve(Date.now() - started); }, reject: reject });
      });
    }

    /** {topic, active, position, recovered, replayed, resumed} of a subscription, or null. */
    subscription(topic) {
      var e = this._subs.get(topic);
      return e ? { topic: topic, active: e.active, position: e.position, recovered: e.recovered, replayed: e.replayed, resumed: e.resumed } : null;
    }
    get subscriptions() { return Array.from(this._subs.keys()).map(this.subscription, this); }

    _entry(topic, opts) {
      var entry = this._subs.get(topic);
      if (!entry) this._subs.set(topic, entry = { options: {}, active: false, position: null, recovered: null, replayed: 0, resumed: false });
      entry.options = opts;
      return entry;
    }

    _sendSubscribe(topic, entry) {
      var message = { type: "subscribe", data: topic };
      entry.resumed = false;
      if (entry.position && !isPattern(topic)) {
        message.since = { epoch: entry.position.epoch, offset: entry.position.offset };
        entry.resumed = true;
      } else if (entry.options.last !== undefined && !isPattern(topic)) message.last = entry.options.last;
      this.send(message);
    }

    // -- refresh
    _scheduleRefresh(expiresAt) {
      clearTimeout(this._timers.refresh);
      var every = this.options.refreshEvery, delay = null;
      if (typeof this.options.token !== "function") return;
      if (every > 0) delay = every;
      else if (expiresAt) delay = Math.max(1000, (expiresAt * 1000 - Date.now()) * 0.8);
      if (delay === null) return;
      var self = this;
      this._timers.refresh = setTimeout(function () { self.refresh(); }, Math.min(delay, 0x7fffffff));
    }

    /** Fetches a token from the token function and sends it as a refresh. */
    async refresh() {
      if (typeof this.options.token !== "function") return;
      try {
        var token = await this.options.token();
        this._token = token;
        this.send({ type: "refresh", data: token });
        if (this.options.refreshEvery > 0) this._scheduleRefresh(null);
      } catch (error) {
        this._emit("error", { code: "token_unavailable", message: String(error && error.message || error) });
      }
    }

    // -- receiving
    _onFrame(data) {
      var message;
      try {
        message = typeof data === "string" ? JSON.parse(data) : decode(data);
        if (message === null || typeof message !== "object" || Array.isArray(message)) throw new Error("not an object");
      } catch (error) {
        this._emit("error", { code: "client_decode", message: "undecodable frame: " + error.message, local: true });
        return;
      }
      this._emit("message", message);
      if (typeof message.topic === "string") return this._onEvent(message);
      switch (message.type) {
        case "subscribed": return this._onSubscribed(message);
        case "unsubscribed": this._emit("unsubscribed", { topic: message.data, message: message }); return;
        case "pong": var p = this._pings.shift(); if (p) p.resolve(); this._emit("pong", message); return;
        case "refreshed":
          this._emit("refreshed", message.data);
          if (!(this.options.refreshEvery > 0)) this._scheduleRefresh(message.data && message.data.expires_at);
          return;
        case "error": this._emit("error", Object.assign({ message: "" }, message.data, { reply: message })); return;
      }
    }

    _onEvent(event) {
      var position = event.position, entry = this._subs.get(event.topic);
      if (position && entry) {
        var last = entry.position;
        // Guard against a duplicate at a seam: the same history never goes backwards.
        if (last && last.epoch === position.epoch && position.offset <= last.offset) return;
        entry.position = { epoch: position.epoch, offset: position.offset };
      }
      this._emit("event", event);
    }

    _onSubscribed(message) {
      var topic = message.data, entry = this._subs.get(topic);
      if (entry && !entry.active) {
        entry.active = true;
        entry.recovered = message.recovered === undefined ? null : message.recovered;
        entry.replayed = message.replayed || 0;
        var p = message.position;
        // The place just before what follows the reply (replayed events, then live ones).
        if (p && typeof p === "object") entry.position = { epoch: p.epoch, offset: Math.max(0, Number(p.offset) - entry.replayed) };
      }
      this._emit("subscribed", {
        topic: topic, position: message.position || null, recovered: message.recovered, replayed: message.replayed || 0,
        resumed: entry ? entry.resumed : false, message: message
      });
    }
  }

  root.Switchboard = { Client: Client, msgpack: { encode: encode, decode: decode }, version: "1" };
})(typeof globalThis !== "undefined" ? globalThis : this);
