#if os(Linux)
import Glibc
import SwitchboardCore
import SwitchboardServer
import SwitchboardTesting
import Testing

/// The connection handler's own writes on Linux over plain TCP (issue 16): straight to the
/// kernel while NIO holds nothing for the socket, through NIO once the kernel's buffer is
/// full, back to direct writes once NIO has drained, and the close after the data. Counted
/// by `/stats` `socket_writes.direct` and `.pipeline`, against a real client that stops
/// reading and then reads everything.
@Suite struct DirectWriteTests {
    static let config = """
        sources:
          - name: publish
            plugin: webhook
            keys: ["${SWITCHBOARD_PUBLISH_KEY}"]
        endpoints:
          - path: /ws
            topics: [news]
            subscribe: [news]
            heartbeat: {interval: 0s}
            send_queue: {max_messages: 100000, max_bytes: 64MiB, policy: disconnect}
        """

    func socketWrites(_ gateway: TestGateway) async throws -> (direct: Int, pipeline: Int) {
        let stats = try await gateway.get("/stats").body
        let direct = try #require(stats["socket_writes"]?["direct"]?.intValue)
        let pipeline = try #require(stats["socket_writes"]?["pipeline"]?.intValue)
        return (Int(direct), Int(pipeline))
    }

    func publish(_ gateway: TestGateway, from first: Int, count: Int, pad: Int) async throws {
        let padding = String(repeating: "p", count: pad)
        let events = (first..<first + count).map { #"{"topic":"news","type":"e","data":{"n":\#($0),"pad":"\#(padding)"}}"# }
        let answer = try await gateway.post("/api/publish", body: "[" + events.joined(separator: ",") + "]")
        #expect(answer.status == 202)
    }

    @Test(.enabled(if: DirectSocket.enabled, "SWITCHBOARD_DIRECT_WRITES=0 turns direct writes off"))
    func directWritesHandOverToNIOAndComeBackInOrder() async throws {
        let gateway = try await TestGateway.start(Self.config)
        let client = try BlockingWebSocketClient(port: gateway.port, path: "/ws", receiveBuffer: 4096)
        // The handler subscribes once installed; a ping's pong proves it is.
        try client.sendText(#"{"type":"ping"}"#)
        #expect(try client.readText()?.json["type"] == "pong")
        let start = try await socketWrites(gateway)
        #expect(start.direct >= 1, "the pong went straight to the kernel")

        // The client reads nothing: publish until NIO holds bytes for it (bounded).
        var published = 0
        while try await socketWrites(gateway).pipeline == start.pipeline, published < 4000 {
            try await publish(gateway, from: published, count: 50, pad: 4000)
            published += 50
        }
        let full = try await socketWrites(gateway)
        #expect(full.pipeline > start.pipeline, "a full kernel buffer hands the rest to NIO (\(published) events published)")
        #expect(full.direct > start.direct)

        // Everything arrives, in order, nothing twice.
        for expected in 0..<published {
            let event = try #require(try client.readText()?.json, "event \(expected) of \(published)")
            #expect(event["data"]?["n"]?.intValue == Int64(expected))
            if event["data"]?["n"]?.intValue != Int64(expected) { break }
        }

        // NIO has drained: the next writes go straight to the kernel again, none through NIO.
        let drained = try await socketWrites(gateway)
        for n in published..<published + 10 {
            try await publish(gateway, from: n, count: 1, pad: 10)
            #expect(try client.readText()?.json["data"]?["n"]?.intValue == Int64(n))
        }
        let after = try await socketWrites(gateway)
        #expect(after.direct >= drained.direct + 10)
        #expect(after.pipeline == drained.pipeline)

        // The close handshake: our close frame goes through NIO, after everything above.
        try client.sendClose(code: 1000)
        #expect(try client.readCloseCode() == 1000)
        client.close()
        await gateway.stop()
    }
}

/// A WebSocket client on a blocking socket with a small receive buffer, so the test
/// decides when it reads (NIO clients read as soon as bytes arrive).
final class BlockingWebSocketClient {
    let descriptor: CInt
    private var buffer: [UInt8] = []

    struct Failure: Error, CustomStringConvertible { let description: String }

    init(port: Int, path: String, receiveBuffer: Int) throws {
        descriptor = socket(AF_INET, CInt(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw Failure(description: "socket: errno \(errno)") }
        var size = CInt(receiveBuffer)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<CInt>.size))
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            Glibc.close(descriptor)
            throw Failure(description: "connect: errno \(errno)")
        }
        try sendAll(Array("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".utf8))
        while true {
            if let end = buffer.firstRange(of: Array("\r\n\r\n".utf8)) {
                let head = String(decoding: buffer[..<end.lowerBound], as: UTF8.self)
                buffer.removeSubrange(..<end.upperBound)
                guard head.hasPrefix("HTTP/1.1 101") else { throw Failure(description: "no upgrade: \(head)") }
                return
            }
            guard try receiveMore() else { throw Failure(description: "closed during the handshake") }
        }
    }

    func sendAll(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let sent = bytes[offset...].withUnsafeBytes { send(descriptor, $0.baseAddress, $0.count, CInt(MSG_NOSIGNAL)) }
            guard sent > 0 else { throw Failure(description: "send: errno \(errno)") }
            offset += sent
        }
    }

    func sendText(_ text: String) throws {
        try sendAll(TestWebSocketClient.encodeFrame(opcode: 1, payload: Array(text.utf8)))
    }

    func sendClose(code: UInt16) throws {
        try sendAll(TestWebSocketClient.encodeFrame(opcode: 8, payload: [UInt8(code >> 8), UInt8(code & 0xff)]))
    }

    /// False once the peer closed; throws on a timeout.
    private func receiveMore() throws -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65536)
        let count = chunk.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
        if count < 0 { throw Failure(description: "recv: errno \(errno)") }
        if count == 0 { return false }
        buffer.append(contentsOf: chunk[..<count])
        return true
    }

    /// The next frame (opcode, payload), or nil once the socket is closed.
    func readFrame() throws -> (opcode: UInt8, payload: [UInt8])? {
        while true {
            if buffer.count >= 2 {
                var length = Int(buffer[1] & 0x7f)
                var offset = 2
                if length == 126, buffer.count >= 4 {
                    length = Int(buffer[2]) << 8 | Int(buffer[3])
                    offset = 4
                } else if length == 127, buffer.count >= 10 {
                    length = buffer[2..<10].reduce(0) { $0 << 8 | Int($1) }
                    offset = 10
                }
                if (length < 126 || offset > 2), buffer.count >= offset + length {
                    let frame = (buffer[0] & 0x0f, Array(buffer[offset..<offset + length]))
                    buffer.removeSubrange(..<(offset + length))
                    return frame
                }
            }
            guard try receiveMore() else { return nil }
        }
    }

    func readText() throws -> String? {
        guard let frame = try readFrame() else { return nil }
        guard frame.opcode == 1 else { throw Failure(description: "expected a text frame, got opcode \(frame.opcode)") }
        return String(decoding: frame.payload, as: UTF8.self)
    }

    func readCloseCode() throws -> UInt16? {
        while let frame = try readFrame() {
            if frame.opcode == 8 {
                guard frame.payload.count >= 2 else { return 1005 }
                return UInt16(frame.payload[0]) << 8 | UInt16(frame.payload[1])
            }
        }
        return nil
    }

    func close() { Glibc.close(descriptor) }
}

#endif
