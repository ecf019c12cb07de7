import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A deliberately low-level WebSocket client for tests: it speaks RFC 6455 over a real
/// socket and can also send what well-behaved clients never do (unmasked frames, invalid
/// UTF-8, oversized messages, bad close codes).
///
/// ```swift
/// let client = try await TestWebSocketClient.connect(port: port, path: "/ws")
/// try await client.sendText(#"{"type":"ping"}"#)
/// let reply = try await client.receiveText()
/// ```
public final class TestWebSocketClient: @unchecked Sendable {
    /// One frame received from the server.
    public struct Frame: Sendable, Equatable {
        public var fin: Bool
        public var rsv1: Bool
        public var opcode: UInt8
        public var payload: [UInt8]

        public var text: String { String(decoding: payload, as: UTF8.self) }

        /// For close frames: the status code, if present.
        public var closeCode: UInt16? {
            guard opcode == 0x8, payload.count >= 2 else { return nil }
            return UInt16(payload[0]) << 8 | UInt16(payload[1])
        }

        /// For close frames: the reason text.
        public var closeReason: String {
            guard opcode == 0x8, payload.count > 2 else { return "" }
            return String(decoding: payload[2...], as: UTF8.self)
        }
    }

    /// The server answered the handshake with something other than 101.
    public struct HandshakeRefused: Error, CustomStringConvertible {
        public var status: Int
        public var headers: [(String, String)]
        public var body: String
        public var description: String { "handshake refused with \(status): \(body)" }
    }

    public enum ClientError: Error {
        case timeout
        case connectionClosed
        case malformedResponse(String)
    }

    public let channel: any Channel
    private let inbox: Inbox
    /// Response headers of the successful handshake (lower-cased names).
    public private(set) var responseHeaders: [(String, String)] = []

    private init(channel: any Channel, inbox: Inbox) {
        self.channel = channel
        self.inbox = inbox
    }

    /// Connects and performs the opening handshake. Throws ``HandshakeRefused`` for a non-101 answer.
    public static func connect(
        host: String = "127.0.0.1",
        port: Int,
        path: String,
        headers: [(String, String)] = [],
        timeout: Duration = .seconds(5)
    ) async throws -> TestWebSocketClient {
        let inbox = Inbox()
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(InboxHandler(inbox: inbox))
                }
            }
            .connect(host: host, port: port)
            .get()
        let client = TestWebSocketClient(channel: channel, inbox: inbox)
        var keyBytes = [UInt8](repeating: 0, count: 16)
        for i in keyBytes.indices { keyBytes[i] = UInt8.random(in: 0...255) }
        var request = "GET \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        request += "Sec-WebSocket-Key: \(base64(keyBytes))\r\nSec-WebSocket-Version: 13\r\n"
        for (name, value) in headers { request += "\(name): \(value)\r\n" }
        request += "\r\n"
        try await client.sendRaw(Array(request.utf8))
        try await client.readHandshakeResponse(timeout: timeout)
        return client
    }

    private func readHandshakeResponse(timeout: Duration) async throws {
        let deadline = ContinuousClock.now + timeout
        var head: [UInt8]?
        while head == nil {
            head = inbox.takeHead()
            if head != nil { break }
            if inbox.isClosed { throw ClientError.connectionClosed }
            guard ContinuousClock.now < deadline else { throw ClientError.timeout }
            await inbox.waitForData(timeout: deadline - ContinuousClock.now, eventLoop: channel.eventLoop)
        }
        let text = String(decoding: head ?? [], as: UTF8.self)
        var lines = text.components(separatedBy: "\r\n")
        let statusLine = lines.removeFirst()
        let parts = statusLine.split(separator: " ")
        guard parts.count >= 2, let status = Int(parts[1]) else { throw ClientError.malformedResponse(statusLine) }
        var headers: [(String, String)] = []
        for line in lines where !line.isEmpty {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers.append((line[..<colon].lowercased(), line[line.index(after: colon)...].trimmingCharacters(in: " ")))
        }
        if status != 101 {
            let length = Int(headers.first { $0.0 == "content-length" }?.1 ?? "0") ?? 0
            while inbox.bufferedCount < length && !inbox.isClosed && ContinuousClock.now < deadline {
                await inbox.waitForData(timeout: deadline - ContinuousClock.now, eventLoop: channel.eventLoop)
            }
            let body = String(decoding: inbox.take(length), as: UTF8.self)
            try? await channel.close()
            throw HandshakeRefused(status: status, headers: headers, body: body)
        }
        responseHeaders = headers
    }

    /// The value of a handshake response header.
    public func responseHeader(_ name: String) -> String? {
        responseHeaders.first { $0.0 == name.lowercased() }?.1
    }

    // MARK: sending

    /// Sends raw bytes (for malformed input).
    public func sendRaw(_ bytes: [UInt8]) async throws {
        var buffer = channel.allocator.buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        try await channel.writeAndFlush(buffer)
    }

    /// Sends one frame; client frames are masked unless `masked` is false.
    public func sendFrame(opcode: UInt8, payload: [UInt8], fin: Bool = true, masked: Bool = true, rsv1: Bool = false) async throws {
        try await sendRaw(Self.encodeFrame(opcode: opcode, payload: payload, fin: fin, masked: masked, rsv1: rsv1))
    }

    public func sendText(_ text: String) async throws {
        try await sendFrame(opcode: 0x1, payload: Array(text.utf8))
    }

    public func sendBinary(_ bytes: [UInt8]) async throws {
        try await sendFrame(opcode: 0x2, payload: bytes)
    }

    /// Sends a close frame with `code`.
    public func sendClose(code: UInt16 = 1000, reason: String = "") async throws {
        try await sendFrame(opcode: 0x8, payload: [UInt8(code >> 8), UInt8(code & 0xFF)] + Array(reason.utf8))
    }

    /// Encodes one client frame.
    public static func encodeFrame(opcode: UInt8, payload: [UInt8], fin: Bool = true, masked: Bool = true, rsv1: Bool = false) -> [UInt8] {
        var bytes: [UInt8] = [(fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | opcode]
        let maskBit: UInt8 = masked ? 0x80 : 0
        if payload.count < 126 {
            bytes.append(maskBit | UInt8(payload.count))
        } else if payload.count <= 0xFFFF {
            bytes.append(maskBit | 126)
            bytes.append(UInt8(payload.count >> 8))
            bytes.append(UInt8(payload.count & 0xFF))
        } else {
            bytes.append(maskBit | 127)
            for shift in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8((UInt64(payload.count) >> UInt64(shift)) & 0xFF)) }
        }
        if masked {
            let mask = (0..<4).map { _ in UInt8.random(in: 0...255) }
            bytes.append(contentsOf: mask)
            for (i, byte) in payload.enumerated() { bytes.append(byte ^ mask[i % 4]) }
        } else {
            bytes.append(contentsOf: payload)
        }
        return bytes
    }

    // MARK: receiving

    /// The next frame (control frames included).
    public func receiveFrame(timeout: Duration = .seconds(5)) async throws -> Frame {
        let deadline = ContinuousClock.now + timeout
        while true {
            if let frame = inbox.takeFrame() { return frame }
            if inbox.isClosed { throw ClientError.connectionClosed }
            guard ContinuousClock.now < deadline else { throw ClientError.timeout }
            await inbox.waitForData(timeout: deadline - ContinuousClock.now, eventLoop: channel.eventLoop)
        }
    }

    /// The next data frame's text, skipping pings (answered) and pongs.
    public func receiveText(timeout: Duration = .seconds(5)) async throws -> String {
        let deadline = ContinuousClock.now + timeout
        while true {
            let frame = try await receiveFrame(timeout: deadline - ContinuousClock.now)
            switch frame.opcode {
            case 0x9: try await sendFrame(opcode: 0xA, payload: frame.payload)
            case 0xA: continue
            case 0x8: throw ClientError.connectionClosed
            default: return frame.text
            }
        }
    }

    /// Waits for the server's close frame and returns it; answers pings meanwhile and
    /// skips data frames.
    public func receiveClose(timeout: Duration = .seconds(5)) async throws -> Frame {
        let deadline = ContinuousClock.now + timeout
        while true {
            let frame = try await receiveFrame(timeout: deadline - ContinuousClock.now)
            if frame.opcode == 0x8 { return frame }
        }
    }

    /// Whether the server closed the TCP connection within `timeout`.
    public func waitForDisconnect(timeout: Duration = .seconds(5)) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while !inbox.isClosed {
            guard ContinuousClock.now < deadline else { return false }
            await inbox.waitForData(timeout: deadline - ContinuousClock.now, eventLoop: channel.eventLoop)
        }
        return true
    }

    /// Frames already received and not yet read, without waiting.
    public func drainFrames() -> [Frame] {
        var frames: [Frame] = []
        while let frame = inbox.takeFrame() { frames.append(frame) }
        return frames
    }

    /// Closes the socket without a handshake.
    public func disconnect() async {
        try? await channel.close()
    }
}

/// Bytes received so far plus a single waiter.
final class Inbox: @unchecked Sendable {
    private let lock = NIOLock()
    private var buffer: [UInt8] = []
    private var closed = false
    private var waiter: (id: Int, continuation: CheckedContinuation<Void, Never>)?
    private var nextWaiterID = 0

    var isClosed: Bool { lock.withLock { closed && buffer.isEmpty } }
    var bufferedCount: Int { lock.withLock { buffer.count } }

    func append(_ bytes: [UInt8]) {
        let waiting: CheckedContinuation<Void, Never>? = lock.withLock {
            buffer.append(contentsOf: bytes)
            defer { waiter = nil }
            return waiter?.continuation
        }
        waiting?.resume()
    }

    func close() {
        let waiting: CheckedContinuation<Void, Never>? = lock.withLock {
            closed = true
            defer { waiter = nil }
            return waiter?.continuation
        }
        waiting?.resume()
    }

    func waitForData(timeout: Duration, eventLoop: any EventLoop) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let id: Int? = lock.withLock {
                if closed { return nil }
                nextWaiterID += 1
                waiter = (nextWaiterID, continuation)
                return nextWaiterID
            }
            guard let id else {
                continuation.resume()
                return
            }
            eventLoop.scheduleTask(in: max(.zero, TimeAmount(timeout))) {
                let expired: CheckedContinuation<Void, Never>? = self.lock.withLock {
                    guard let current = self.waiter, current.id == id else { return nil }
                    self.waiter = nil
                    return current.continuation
                }
                expired?.resume()
            }
        }
    }

    /// Removes and returns the HTTP head (through CRLFCRLF), if complete.
    func takeHead() -> [UInt8]? {
        lock.withLock {
            let marker: [UInt8] = [13, 10, 13, 10]
            guard buffer.count >= 4 else { return nil }
            for i in 0...(buffer.count - 4) where Array(buffer[i..<(i + 4)]) == marker {
                let head = Array(buffer[0..<i])
                buffer.removeFirst(i + 4)
                return head
            }
            return nil
        }
    }

    func take(_ count: Int) -> [UInt8] {
        lock.withLock {
            let n = min(count, buffer.count)
            let bytes = Array(buffer[0..<n])
            buffer.removeFirst(n)
            return bytes
        }
    }

    func takeFrame() -> TestWebSocketClient.Frame? {
        lock.withLock {
            guard buffer.count >= 2 else { return nil }
            let first = buffer[0]
            let second = buffer[1]
            var length = Int(second & 0x7F)
            var offset = 2
            if length == 126 {
                guard buffer.count >= 4 else { return nil }
                length = Int(buffer[2]) << 8 | Int(buffer[3])
                offset = 4
            } else if length == 127 {
                guard buffer.count >= 10 else { return nil }
                length = 0
                for i in 2..<10 { length = length << 8 | Int(buffer[i]) }
                offset = 10
            }
            var mask: [UInt8]?
            if second & 0x80 != 0 {
                guard buffer.count >= offset + 4 else { return nil }
                mask = Array(buffer[offset..<(offset + 4)])
                offset += 4
            }
            guard buffer.count >= offset + length else { return nil }
            var payload = Array(buffer[offset..<(offset + length)])
            if let mask { for i in payload.indices { payload[i] ^= mask[i % 4] } }
            buffer.removeFirst(offset + length)
            return .init(fin: first & 0x80 != 0, rsv1: first & 0x40 != 0, opcode: first & 0x0F, payload: payload)
        }
    }
}

final class InboxHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    let inbox: Inbox

    init(inbox: Inbox) { self.inbox = inbox }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        inbox.append(Array(buffer.readableBytesView))
    }

    func channelInactive(context: ChannelHandlerContext) {
        inbox.close()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

private let base64Alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

func base64(_ bytes: [UInt8]) -> String {
    var output: [UInt8] = []
    var index = 0
    while index < bytes.count {
        let chunk = Array(bytes[index..<min(index + 3, bytes.count)])
        let value = (UInt32(chunk[0]) << 16) | (UInt32(chunk.count > 1 ? chunk[1] : 0) << 8) | UInt32(chunk.count > 2 ? chunk[2] : 0)
        output.append(base64Alphabet[Int((value >> 18) & 63)])
        output.append(base64Alphabet[Int((value >> 12) & 63)])
        output.append(chunk.count > 1 ? base64Alphabet[Int((value >> 6) & 63)] : UInt8(ascii: "="))
        output.append(chunk.count > 2 ? base64Alphabet[Int(value & 63)] : UInt8(ascii: "="))
        index += 3
    }
    return String(decoding: output, as: UTF8.self)
}

extension String {
    fileprivate func trimmingCharacters(in set: Character) -> String {
        var text = Substring(self)
        while text.first == set { text = text.dropFirst() }
        while text.last == set { text = text.dropLast() }
        return String(text)
    }
}

extension Substring {
    fileprivate func trimmingCharacters(in set: Character) -> String { String(self).trimmingCharacters(in: set) }
}
