import MessagePackPlugin
import NIOCore
import SwitchboardCore
import SwitchboardKernel
import SwitchboardTesting
import Testing

/// JSON and MessagePack clients, with and without permessage-deflate, on one endpoint.
@Suite struct CompressionAndEncoderTests {
    static let config = """
        sources:
          - name: publish
            plugin: webhook
            keys: ["${SWITCHBOARD_PUBLISH_KEY}"]
        endpoints:
          - path: /ws
            encoders: [json, msgpack]
            compression:
              mode: shared
              min_size: 200
          - path: /dedicated
            compression:
              mode: dedicated
              min_size: 0
          - path: /tight
            compression:
              mode: dedicated
              max_memory: 1KiB
          - path: /plain
            max_message_size: 4KiB
        """

    /// A client plus what it needs to read its frames.
    struct Reader {
        let client: TestWebSocketClient
        let msgpack: Bool
        let inflater: Inflater?
        let resetAfterMessage: Bool

        static func connect(port: Int, path: String = "/ws", msgpack: Bool, deflate: Bool) async throws -> Reader {
            var headers: [(String, String)] = []
            if msgpack { headers.append(("Sec-WebSocket-Protocol", "switchboard.msgpack")) }
            if deflate { headers.append(("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")) }
            let client = try await TestWebSocketClient.connect(port: port, path: path, headers: headers)
            let extensions = client.responseHeader("sec-websocket-extensions")
            #expect((extensions != nil) == deflate)
            return Reader(
                client: client,
                msgpack: msgpack,
                inflater: deflate ? Inflater(windowBits: 15) : nil,
                resetAfterMessage: extensions?.contains("server_no_context_takeover") ?? false
            )
        }

        /// The next data message as JSON, whatever its encoding; also says whether it was compressed.
        func next() async throws -> (value: JSONValue, compressed: Bool, binary: Bool) {
            var frame = try await client.receiveFrame()
            while frame.opcode == 0x9 || frame.opcode == 0xA { frame = try await client.receiveFrame() }
            var payload = ByteBuffer(bytes: frame.payload)
            if frame.rsv1 {
                let inflater = try #require(inflater)
                payload = try inflater.inflate(payload, limit: 1 << 20, resetAfter: resetAfterMessage)
            }
            let value: JSONValue
            if msgpack {
                value = try MessagePackReader.read(payload).get()
            } else {
                value = try JSONParser.parse(payload.readableBytesView)
            }
            return (value, frame.rsv1, frame.opcode == 0x2)
        }

        func subscribe(_ topic: String) async throws {
            if msgpack {
                let bytes: [UInt8] = [0x82, 0xA4] + Array("type".utf8) + [0xA9] + Array("subscribe".utf8) + [0xA4] + Array("data".utf8)
                    + [0xA0 | UInt8(topic.utf8.count)] + Array(topic.utf8)
                try await client.sendBinary(bytes)
            } else {
                try await client.sendText(#"{"type":"subscribe","data":"\#(topic)"}"#)
            }
            #expect(try await next().value["type"] == "subscribed")
        }
    }

    @Test func everyCombinationReceivesTheSameEventsBuiltOncePerVariant() async throws {
        let gateway = try await TestGateway.start(Self.config)
        let readers = [
            try await Reader.connect(port: gateway.port, msgpack: false, deflate: false),
            try await Reader.connect(port: gateway.port, msgpack: false, deflate: true),
            try await Reader.connect(port: gateway.port, msgpack: true, deflate: false),
            try await Reader.connect(port: gateway.port, msgpack: true, deflate: true),
        ]
        for reader in readers { try await reader.subscribe("news") }

        let big = String(repeating: "Switchboard fans out events. ", count: 20)
        let body = #"[{"topic":"news","type":"a","data":{"text":"\#(big)","n":1}},{"topic":"news","type":"b","data":{"n":2.5,"ok":true,"none":null}},{"topic":"news","type":"c","data":[1,"two"]}]"#
        #expect(try await gateway.post("/api/publish", body: body).status == 202)

        var received: [[JSONValue]] = []
        for (index, reader) in readers.enumerated() {
            var events: [JSONValue] = []
            for eventIndex in 0..<3 {
                let (value, compressed, binary) = try await reader.next()
                events.append(value)
                #expect(binary == reader.msgpack)
                // Only the large first event is over min_size; only deflate clients get RSV1.
                #expect(compressed == (reader.inflater != nil && eventIndex == 0), "reader \(index) event \(eventIndex)")
            }
            received.append(events)
        }
        #expect(received.allSatisfy { $0 == received[0] })
        #expect(received[0].map { $0["type"] } == ["a", "b", "c"])
        #expect(received[0][1]["data"] == ["n": 2.5, "ok": true, "none": nil])

        let stats = try await gateway.get("/stats").body
        #expect(stats["encodes"] == 6)  // 3 events × 2 encoders
        #expect(stats["frame_builds"] == 8)  // 6 plain frames + the one large event compressed for 2 encoders
        #expect(stats["compressions"] == 2)
        #expect(stats["deliveries_out"] == 12)
        await gateway.stop()
    }

    @Test func dedicatedModeKeepsContextAndAccountsMemory() async throws {
        let gateway = try await TestGateway.start(Self.config)
        let reader = try await Reader.connect(port: gateway.port, path: "/dedicated", msgpack: false, deflate: true)
        #expect(!reader.resetAfterMessage)
        #expect(try await gateway.get("/stats").body["dedicated_compression_memory_bytes"]?.intValue ?? 0 > 0)
        try await reader.subscribe("jobs")
        for n in 0..<3 {
            _ = try await gateway.post("/api/publish", body: #"{"topic":"jobs","type":"job_update","data":{"job_id":"42","status":"running","n":\#(n)}}"#)
            let (value, compressed, _) = try await reader.next()
            #expect(compressed)
            #expect(value["data"]?["n"] == .int(Int64(n)))
        }
        await reader.client.disconnect()
        var memory: Int64? = 1
        for _ in 0..<50 where memory != 0 {
            try await Task.sleep(for: .milliseconds(20))
            memory = try await gateway.get("/stats").body["dedicated_compression_memory_bytes"]?.intValue
        }
        #expect(memory == 0)
        await gateway.stop()
    }

    @Test func dedicatedFallsBackToSharedWhenTheBudgetIsSpent() async throws {
        let gateway = try await TestGateway.start(Self.config)
        let reader = try await Reader.connect(port: gateway.port, path: "/tight", msgpack: false, deflate: true)
        #expect(reader.resetAfterMessage)
        #expect(reader.client.responseHeader("sec-websocket-extensions")?.contains("server_no_context_takeover") == true)
        await gateway.stop()
    }

    @Test func compressedClientMessagesAndBombs() async throws {
        let gateway = try await TestGateway.start(Self.config)
        let deflater = try #require(Deflater(settings: DeflateSettings(windowBits: 15, level: 6, memLevel: 8)))

        let client = try await TestWebSocketClient.connect(port: gateway.port, path: "/ws", headers: [("Sec-WebSocket-Extensions", "permessage-deflate")])
        var ping = ByteBuffer()
        deflater.compress(ByteBuffer(string: #"{"type":"ping"}"#), into: &ping, resetAfter: true)
        try await client.sendFrame(opcode: 0x1, payload: Array(ping.readableBytesView), rsv1: true)
        #expect(try await client.receiveText().json["type"] == "pong")

        // 16 MiB of zeros compress to a few KiB; the endpoint allows 64 KiB messages.
        var bomb = ByteBuffer()
        deflater.compress(ByteBuffer(repeating: 0x20, count: 16 * 1024 * 1024), into: &bomb, resetAfter: true)
        try await client.sendFrame(opcode: 0x1, payload: Array(bomb.readableBytesView), rsv1: true)
        #expect(try await client.receiveClose().closeCode == 1009)

        let garbage = try await TestWebSocketClient.connect(port: gateway.port, path: "/ws", headers: [("Sec-WebSocket-Extensions", "permessage-deflate")])
        try await garbage.sendFrame(opcode: 0x1, payload: [0xFF, 0xFF, 0xFF, 0xFF], rsv1: true)
        #expect(try await garbage.receiveClose().closeCode == 1007)

        // RSV1 without having negotiated compression is a protocol error.
        let plain = try await TestWebSocketClient.connect(port: gateway.port, path: "/plain")
        #expect(plain.responseHeader("sec-websocket-extensions") == nil)
        try await plain.sendFrame(opcode: 0x1, payload: Array(ping.readableBytesView), rsv1: true)
        #expect(try await plain.receiveClose().closeCode == 1002)
        await gateway.stop()
    }

    @Test func malformedMessagePackGetsAnErrorReply() async throws {
        let gateway = try await TestGateway.start(Self.config)
        let reader = try await Reader.connect(port: gateway.port, msgpack: true, deflate: false)
        try await reader.client.sendBinary([0xDD, 0x7F, 0xFF, 0xFF, 0xFF])
        let reply = try await reader.next().value
        #expect(reply["type"] == "error")
        #expect(reply["data"]?["code"] == "bad_message")
        try await reader.client.sendBinary([0x81, 0xA4] + Array("type".utf8) + [0xA4] + Array("ping".utf8))
        #expect(try await reader.next().value["type"] == "pong")
        await gateway.stop()
    }

    @Test func formatQueryParameterSelectsTheEncoder() async throws {
        let gateway = try await TestGateway.start(Self.config)
        let client = try await TestWebSocketClient.connect(port: gateway.port, path: "/ws?format=msgpack")
        #expect(client.responseHeader("sec-websocket-protocol") == nil)
        try await client.sendBinary([0x81, 0xA4] + Array("type".utf8) + [0xA4] + Array("ping".utf8))
        let frame = try await client.receiveFrame()
        #expect(frame.opcode == 0x2)
        #expect(try MessagePackReader.read(ByteBuffer(bytes: frame.payload)).get()["type"] == "pong")
        await #expect {
            try await TestWebSocketClient.connect(port: gateway.port, path: "/ws", headers: [("Sec-WebSocket-Protocol", "switchboard.cbor")])
        } throws: { ($0 as? TestWebSocketClient.HandshakeRefused)?.status == 400 }
        await gateway.stop()
    }
}
