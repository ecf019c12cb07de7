import SwitchboardConfig
import SwitchboardCore
import SwitchboardTesting
import Testing

/// End to end: real gateway, real sockets, a raw RFC 6455 client.
@Suite struct WebSocketEndpointTests {
    static let config = """
        sources:
          - name: publish
            plugin: webhook
            keys: ["${SWITCHBOARD_PUBLISH_KEY}"]
          - name: ticks
            plugin: timer
            every: 100ms
            topic: ticks
            type: tick
            data: {n: 1}
        endpoints:
          - path: /ws
            topics: ["topic:*", "group:*", "ticks", "public"]
            max_message_size: 1KiB
          - path: /ticks
            subscribe: [ticks]
            topics: [ticks]
        """

    func subscribe(_ client: TestWebSocketClient, _ topic: String) async throws {
        try await client.sendText(#"{"type":"subscribe","data":"\#(topic)"}"#)
        let reply = try await client.receiveText().json
        #expect(reply["type"] == "subscribed")
        #expect(reply["data"] == .string(topic))
    }

    @Test func webhookEventsReachExactlyTheSubscribedTopics() async throws {
        let gateway = try await TestGateway.start(Self.config)
        let exact = try await TestWebSocketClient.connect(port: gateway.port, path: "/ws")
        let wildcard = try await TestWebSocketClient.connect(port: gateway.port, path: "/ws")
        try await subscribe(exact, "topic:a")
        try await subscribe(wildcard, "topic:*")

        let published = try await gateway.post(
            "/api/publish",
            body: #"[{"topic":"topic:a","type":"topic_created","data":{"name":"a"}},{"topic":"topic:b","type":"topic_created","data":{"name":"b"}},{"topic":"group:c","type":"group_updated","data":{}}]"#
        )
        #expect(published.status == 202)
        _ = try await gateway.post("/api/publish", body: #"{"topic":"topic:a","type":"sentinel"}"#)

        let first = try await exact.receiveText().json
        #expect(first["type"] == "topic_created")
        #expect(first["topic"] == "topic:a")
        #expect(first["data"] == ["name": "a"])
        #expect(first["timestamp"]?.intValue != nil)
        // Nothing else arrived before the sentinel: topic:b and group:c were not delivered.
        #expect(try await exact.receiveText().json["type"] == "sentinel")

        let seen = [try await wildcard.receiveText().json, try await wildcard.receiveText().json, try await wildcard.receiveText().json]
        #expect(seen.map { $0["topic"] } == ["topic:a", "topic:b", "topic:a"])
        #expect(seen.last?["type"] == "sentinel")
        await gateway.stop()
    }

    @Test func timerEventsArriveForDefaultSubscriptions() async throws {
        let gateway = try await TestGateway.start(Self.config)
        let client = try await TestWebSocketClient.connect(port: gateway.port, path: "/ticks")
        let one = try await client.receiveText().json
        let two = try await client.receiveText().json
        #expect(one["type"] == "tick")
        #expect(one["topic"] == "ticks")
        #expect(two["data"] == ["n": 1])
        await gateway.stop()
    }

    @Test func pingGetsPongAtBothLevels() async throws {
        let gateway = try await TestGateway.start(Self.config)
        let client = try await TestWebSocketClient.connect(port: gateway.port, path: "/ws")
        try await client.sendText(#"{"type":"ping","timestamp":1704225600}"#)
        let pong = try await client.receiveText().json
        #expect(pong["type"] == "pong")
        #expect(pong["timestamp"]?.intValue ?? 0 > 1_700_000_000)

        try await client.sendFrame(opcode: 0x9, payload: Array("hello".utf8))
        let frame = try await client.receiveFrame()
        #expect(frame.opcode == 0xA)
        #expect(frame.text == "hello")
        await gateway.stop()
    }

    @Test func malformedMessagesGetErrorRepliesAndTheConnectionStays() async throws {
        let gateway = try await TestGateway.start(Self.config)
        let client = try await TestWebSocketClient.connect(port: gateway.port, path: "/ws")
        let cases: [(String, String)] = [
            ("{bad", "bad_message"),
            ("[1,2]", "bad_message"),
            (#"{"type":"dance"}"#, "unknown_type"),
            (#"{"type":"subscribe","data":"admin:secrets"}"#, "forbidden"),
            (#"{"type":"subscribe","data":"a*b"}"#, "bad_topic"),
            (#"{"type":"unsubscribe","data":"topic:never"}"#, "not_subscribed"),
        ]
        for (input, code) in cases {
            try await client.sendText(input)
            let reply = try await client.receiveText().json
            #expect(reply["type"] == "error", "\(input)")
            #expect(reply["data"]?["code"] == .string(code), "\(input)")
            #expect(reply["data"]?["message"]?.stringValue?.isEmpty == false)
        }
        try await client.sendText(#"{"type":"ping"}"#)
        #expect(try await client.receiveText().json["type"] == "pong")
        let stats = try await gateway.get("/stats")
        #expect(stats.body["subscribers"]?["admin:secrets"] == nil)
        await gateway.stop()
    }

    @Test func unsubscribeStopsDelivery() async throws {
        let gateway = try await TestGateway.start(Self.config)
        let client = try await TestWebSocketClient.connect(port: gateway.port, path: "/ws")
        try await subscribe(client, "topic:x")
        try await subscribe(client, "public")
        try await client.sendText(#"{"type":"unsubscribe","data":"topic:x"}"#)
        #expect(try await client.receiveText().json["type"] == "unsubscribed")
        _ = try await gateway.post("/api/publish", body: #"[{"topic":"topic:x"},{"topic":"public","type":"after"}]"#)
        let next = try await client.receiveText().json
        #expect(next["topic"] == "public")
        #expect(next["type"] == "after")
        await gateway.stop()
    }

    @Test func oversizedMessagesClose1009() async throws {
        let gateway = try await TestGateway.start(Self.config)
        let single = try await TestWebSocketClient.connect(port: gateway.port, path: "/ws")
        try await single.sendText(String(repeating: "x", count: 2000))
        let close = try await single.receiveClose()
        #expect(close.closeCode == 1009)
        #expect(await single.waitForDisconnect())

        let fragmented = try await TestWebSocketClient.connect(port: gateway.port, path: "/ws")
        try await fragmented.sendFrame(opcode: 0x1, payload: Array(repeating: 0x61, count: 600), fin: false)
        try await fragmented.sendFrame(opcode: 0x0, payload: Array(repeating: 0x61, count: 600), fin: true)
        #expect(try await fragmented.receiveClose().closeCode == 1009)
        await gateway.stop()
    }

    @Test func protocolViolationsGetTheRightCloseCodes() async throws {
        let gateway = try await TestGateway.start(Self.config)
        let utf8 = try await TestWebSocketClient.connect(port: gateway.port, path: "/ws")
        try await utf8.sendFrame(opcode: 0x1, payload: [0x7B, 0xC3, 0x28, 0x7D])
        #expect(try await utf8.receiveClose().closeCode == 1007)

        let unmasked = try await TestWebSocketClient.connect(port: gateway.port, path: "/ws")
        try await unmasked.sendFrame(opcode: 0x1, payload: Array(#"{"type":"ping"}"#.utf8), masked: false)
        #expect(try await unmasked.receiveClose().closeCode == 1002)

        let orphan = try await TestWebSocketClient.connect(port: gateway.port, path: "/ws")
        try await orphan.sendFrame(opcode: 0x0, payload: [0x61])
        #expect(try await orphan.receiveClose().closeCode == 1002)

        let reserved = try await TestWebSocketClient.connect(port: gateway.port, path: "/ws")
        try await reserved.sendFrame(opcode: 0x1, payload: [0x61], rsv1: true)
        #expect(try await reserved.receiveClose().closeCode == 1002)

        let badClose = try await TestWebSocketClient.connect(port: gateway.port, path: "/ws")
        try await badClose.sendClose(code: 1005)
        #expect(try await badClose.receiveClose().closeCode == 1002)

        let stats = try await gateway.get("/stats")
        #expect(stats.body["connections"]?["per_endpoint"]?["/ws"]?["closed_for_cause"]?.intValue ?? 0 >= 5)
        await gateway.stop()
    }

    @Test func closeHandshakeIsEchoed() async throws {
        let gateway = try await TestGateway.start(Self.config)
        let client = try await TestWebSocketClient.connect(port: gateway.port, path: "/ws")
        try await client.sendClose(code: 1000, reason: "bye")
        let close = try await client.receiveClose()
        #expect(close.closeCode == 1000)
        #expect(await client.waitForDisconnect())
        await gateway.stop()
    }

    @Test func gatheredFramesArriveWholeAndInOrderWithFewerWrites() async throws {
        let gateway = try await TestGateway.start(
            """
            flush_interval: 50ms
            sources:
              - name: publish
                plugin: webhook
                keys: ["${SWITCHBOARD_PUBLISH_KEY}"]
                max_body: 1MiB
            endpoints:
              - path: /ws
                subscribe: [burst]
                topics: [burst]
            """
        )
        let clients = [
            try await TestWebSocketClient.connect(port: gateway.port, path: "/ws"),
            try await TestWebSocketClient.connect(port: gateway.port, path: "/ws"),
        ]
        // Small frames are copied into one buffer per connection; every 25th is larger than
        // the copy limit and is written on its own, between the gathered ones.
        let big = String(repeating: "b", count: 6000)
        let events = (0..<200).map { i in
            #"{"topic":"burst","type":"n","data":{"i":\#(i),"pad":"\#(i % 25 == 0 ? big : "")"}}"#
        }
        for chunk in stride(from: 0, to: 200, by: 50) {
            let published = try await gateway.post("/api/publish", body: "[" + events[chunk..<chunk + 50].joined(separator: ",") + "]")
            #expect(published.status == 202)
        }
        for client in clients {
            for i in 0..<200 {
                let message = try await client.receiveText().json
                #expect(message["data"]?["i"]?.intValue == Int64(i))
                #expect(message["data"]?["pad"]?.stringValue?.count == (i % 25 == 0 ? 6000 : 0))
            }
        }
        let stats = try await gateway.get("/stats").body
        let deliveries = stats["deliveries_out"]?.intValue ?? 0
        let writes = stats["connection_writes"]?.intValue ?? 0
        #expect(deliveries == 400)
        #expect(writes > 0 && writes * 4 < deliveries, "frames per write: \(deliveries) / \(writes)")
        await gateway.stop()
    }

    @Test func shutdownClosesClientsWith1001() async throws {
        let gateway = try await TestGateway.start(Self.config)
        let client = try await TestWebSocketClient.connect(port: gateway.port, path: "/ws")
        try await subscribe(client, "topic:x")
        async let stopped: Void = gateway.stop()
        let close = try await client.receiveClose(timeout: .seconds(10))
        #expect(close.closeCode == 1001)
        // The reason suggests when to come back: a random delay up to shutdown.reconnect_jitter.
        let delay = close.closeReason.split(separator: "=").last.flatMap { Int($0) } ?? -1
        #expect(close.closeReason.hasPrefix("server shutting down; reconnect_after_ms="))
        #expect((0...5000).contains(delay))
        try await client.sendClose(code: 1001)
        await stopped
        #expect(await client.waitForDisconnect())
    }

    @Test func handshakeRefusals() async throws {
        let gateway = try await TestGateway.start(Self.config)
        await #expect {
            try await TestWebSocketClient.connect(port: gateway.port, path: "/nowhere")
        } throws: { error in
            (error as? TestWebSocketClient.HandshakeRefused)?.status == 404
        }
        await #expect {
            try await TestWebSocketClient.connect(port: gateway.port, path: "/ws?format=msgpack")
        } throws: { error in
            guard let refused = error as? TestWebSocketClient.HandshakeRefused else { return false }
            return refused.status == 400 && refused.body.contains("format 'msgpack' is not offered on /ws")
        }
        // A known subprotocol is echoed back.
        let client = try await TestWebSocketClient.connect(port: gateway.port, path: "/ws", headers: [("Sec-WebSocket-Protocol", "chat, switchboard.json")])
        #expect(client.responseHeader("sec-websocket-protocol") == "switchboard.json")
        // A plain GET on a WebSocket path explains itself.
        let plain = try await gateway.get("/ws")
        #expect(plain.status == 426)
        await gateway.stop()
    }
}

/// Heartbeats with short timings.
@Suite struct HeartbeatTests {
    static let config = """
        endpoints:
          - path: /ws
            heartbeat:
              interval: 250ms
              timeout: 1200ms
        """

    @Test func serverPingsAndDropsSilentPeers() async throws {
        let gateway = try await TestGateway.start(Self.config)
        let silent = try await TestWebSocketClient.connect(port: gateway.port, path: "/ws")
        // Generous bounds: the test also runs under the sanitizers' slowdown.
        let ping = try await silent.receiveFrame(timeout: .seconds(3))
        #expect(ping.opcode == 0x9)
        #expect(await silent.waitForDisconnect(timeout: .seconds(8)))

        // A peer that answers stays connected across several intervals (past the timeout).
        let lively = try await TestWebSocketClient.connect(port: gateway.port, path: "/ws")
        let deadline = ContinuousClock.now + .milliseconds(2500)
        var pings = 0
        while ContinuousClock.now < deadline {
            guard let frame = try? await lively.receiveFrame(timeout: .milliseconds(400)) else { continue }
            if frame.opcode == 0x9 {
                pings += 1
                try await lively.sendFrame(opcode: 0xA, payload: frame.payload)
            }
        }
        #expect(pings >= 3)
        try await lively.sendText(#"{"type":"ping"}"#)
        #expect(try await lively.receiveText().json["type"] == "pong")
        await gateway.stop()
    }
}
