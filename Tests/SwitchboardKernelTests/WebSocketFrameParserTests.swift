import NIOCore
import SwitchboardCore
import SwitchboardKernel
import SwitchboardTesting
import Testing

@Suite("WebSocket frame parser")
struct WebSocketFrameParserTests {
    typealias Frame = WebSocketInboundStateMachine.Frame

    /// One frame to send: its fields, its unmasked payload and its wire bytes.
    struct Sent {
        let opcode: UInt8
        let fin: Bool
        let rsv1: Bool
        let masked: Bool
        let payload: [UInt8]
        let wire: ByteBuffer
    }

    static func sent(opcode: UInt8, fin: Bool = true, rsv1: Bool = false, key: [UInt8]?, payload: [UInt8]) -> Sent {
        var onWire = payload
        if let key { for index in onWire.indices { onWire[index] ^= key[index % 4] } }
        let wire = clientFrameBytes(opcode: opcode, fin: fin, rsv1: rsv1, maskKey: key, payload: ByteBuffer(bytes: onWire))
        return Sent(opcode: opcode, fin: fin, rsv1: rsv1, masked: key != nil, payload: payload, wire: wire)
    }

    /// Feeds `wire` in pieces cut at `cuts`, parsing after each read as the handler does.
    static func parse(_ wire: ByteBuffer, cuts: [Int], limit: Int = 1 << 20) -> (frames: [Frame], failure: WebSocketFrameParser.Failure?, parser: WebSocketFrameParser) {
        var parser = WebSocketFrameParser(maxFrameSize: limit)
        var frames: [Frame] = []
        var failure: WebSocketFrameParser.Failure?
        var start = 0
        for end in cuts + [wire.readableBytes] where end >= start {
            if let piece = wire.getSlice(at: wire.readerIndex + start, length: end - start) { parser.append(piece) }
            start = end
            while let next = parser.next() {
                switch next {
                case .success(let frame): frames.append(frame)
                case .failure(let reason): failure = reason
                }
            }
            parser.finishRead()
        }
        return (frames, failure, parser)
    }

    @Test("seeded random frames, cut into random reads (single bytes included), come out whole, unmasked and in order")
    func randomFramesSurviveAnySplit() {
        var random = SeededRandom.forTest("WebSocketFrameParserTests.randomFramesSurviveAnySplit")
        let seed = random.seed
        let sizes = [0, 1, 2, 7, 8, 9, 125, 126, 127, 65535, 65536, 70_000]
        for round in 0..<40 {
            var sent: [Sent] = []
            var wire = ByteBuffer()
            for _ in 0..<Int.random(in: 1...8, using: &random) {
                let control = Int.random(in: 0..<4, using: &random) == 0
                let size = control ? Int.random(in: 0...125, using: &random) : (sizes.randomElement(using: &random) ?? 0)
                let payload = (0..<size).map { _ in UInt8.random(in: 0...255, using: &random) }
                let key: [UInt8]? = Int.random(in: 0..<8, using: &random) == 0 ? nil : (0..<4).map { _ in UInt8.random(in: 0...255, using: &random) }
                let opcode: UInt8 = control ? [0x8, 0x9, 0xA].randomElement(using: &random) ?? 0x9 : [0x0, 0x1, 0x2].randomElement(using: &random) ?? 0x1
                let frame = Self.sent(opcode: opcode, fin: control || Bool.random(using: &random), rsv1: Bool.random(using: &random), key: key, payload: payload)
                sent.append(frame)
                wire.writeImmutableBuffer(frame.wire)
            }
            let total = wire.readableBytes
            // Mostly a few large reads; every fourth round a read per byte for the first 300.
            var cuts = (0..<Int.random(in: 0...6, using: &random)).map { _ in Int.random(in: 0...total, using: &random) }.sorted()
            if round % 4 == 0 { cuts = Array(0...min(total, 300)) + cuts.filter { $0 > 300 } }
            let (frames, failure, parser) = Self.parse(wire, cuts: cuts)
            #expect(failure == nil, "seed \(seed) round \(round)")
            #expect(frames.count == sent.count, "seed \(seed) round \(round)")
            for (frame, expected) in zip(frames, sent) {
                #expect(frame.opcode == expected.opcode && frame.fin == expected.fin && frame.rsv1 == expected.rsv1, "seed \(seed) round \(round)")
                #expect(frame.masked == expected.masked, "seed \(seed) round \(round)")
                #expect(Array(frame.payload.readableBytesView) == expected.payload, "seed \(seed) round \(round): payload")
            }
            #expect(parser.bufferedBytes == 0, "seed \(seed) round \(round): nothing held after the last frame")
        }
    }

    @Test("an incomplete frame is held, and only it; the rest of the read was parsed")
    func holdsOnlyTheIncompleteFrame() {
        let first = Self.sent(opcode: 0x1, key: [1, 2, 3, 4], payload: Array("hello".utf8))
        let second = Self.sent(opcode: 0x2, key: [9, 8, 7, 6], payload: Array(repeating: 7, count: 300))
        var wire = first.wire
        wire.writeImmutableBuffer(second.wire)
        let cut = first.wire.readableBytes + 10
        var parser = WebSocketFrameParser(maxFrameSize: 1000)
        parser.append(wire.getSlice(at: 0, length: cut) ?? ByteBuffer())
        guard case .success(let frame)? = parser.next() else {
            Issue.record("the first frame should parse")
            return
        }
        #expect(String(buffer: frame.payload) == "hello")
        #expect(parser.next().map { _ in true } == nil)
        parser.finishRead()
        #expect(parser.bufferedBytes == 10)
        parser.append(wire.getSlice(at: cut, length: wire.readableBytes - cut) ?? ByteBuffer())
        guard case .success(let rest)? = parser.next() else {
            Issue.record("the second frame should parse")
            return
        }
        #expect(Array(rest.payload.readableBytesView) == second.payload)
        parser.finishRead()
        #expect(parser.bufferedBytes == 0)
    }

    @Test("limits are enforced from the header alone, and nothing is parsed after a failure")
    func limitsFromTheHeader() {
        // 1,001 bytes announced to a 1,000-byte limit: refused with only the header read.
        var header = ByteBuffer(bytes: [0x82, 0x80 | 126])
        header.writeInteger(UInt16(1001))
        header.writeBytes([1, 2, 3, 4])
        var tooLarge = Self.parse(header, cuts: [], limit: 1000)
        #expect(tooLarge.failure == .frameTooLarge)
        #expect(tooLarge.frames.isEmpty)
        tooLarge.parser.append(Self.sent(opcode: 0x1, key: [1, 2, 3, 4], payload: [65]).wire)
        #expect(tooLarge.parser.next().map { _ in true } == nil, "nothing after a failure")

        // A 64-bit length with the top bit set.
        var huge = ByteBuffer(bytes: [0x82, 0x80 | 127])
        huge.writeInteger(UInt64.max)
        #expect(Self.parse(huge, cuts: [3, 5]).failure == .frameTooLarge)

        // Control frames: not fragmented, at most 125 bytes.
        #expect(Self.parse(Self.sent(opcode: 0x9, fin: false, key: [1, 2, 3, 4], payload: []).wire, cuts: []).failure == .fragmentedControlFrame)
        #expect(Self.parse(Self.sent(opcode: 0x9, key: [1, 2, 3, 4], payload: Array(repeating: 0, count: 126)).wire, cuts: [4]).failure == .controlFrameTooLong)
        // A control frame in the 16-bit length form, even a short one, is refused (1002).
        var wordPing = ByteBuffer(bytes: [0x89, 0x80 | 126])
        wordPing.writeInteger(UInt16(5))
        wordPing.writeBytes([1, 2, 3, 4, 0, 0, 0, 0, 0])
        #expect(Self.parse(wordPing, cuts: []).failure == .controlFrameTooLong)
        // The control-frame rules come before the size limit: a 200-byte ping under a
        // 125-byte limit is a protocol error, not a message too big.
        #expect(Self.parse(Self.sent(opcode: 0x9, key: [1, 2, 3, 4], payload: Array(repeating: 0, count: 200)).wire, cuts: [], limit: 125).failure == .controlFrameTooLong)
        // 125 bytes is fine, and so is exactly the limit.
        #expect(Self.parse(Self.sent(opcode: 0xA, key: [1, 2, 3, 4], payload: Array(repeating: 0, count: 125)).wire, cuts: []).failure == nil)
        #expect(Self.parse(Self.sent(opcode: 0x2, key: [1, 2, 3, 4], payload: Array(repeating: 0, count: 1000)).wire, cuts: [], limit: 1000).frames.count == 1)
    }

    @Test("seeded garbage: frames within the rules, else a failure or a wait for more bytes")
    func garbageKeepsTheRules() {
        var random = SeededRandom.forTest("WebSocketFrameParserTests.garbageKeepsTheRules")
        let seed = random.seed
        for _ in 0..<2000 {
            let bytes = (0..<Int.random(in: 0...300, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
            let result = Self.parse(ByteBuffer(bytes: bytes), cuts: [Int.random(in: 0...bytes.count, using: &random)], limit: 125)
            for frame in result.frames {
                #expect(frame.payload.readableBytes <= 125, "seed \(seed)")
                if frame.opcode & 0x08 != 0 { #expect(frame.fin, "seed \(seed): a fragmented control frame passed") }
            }
            let payloads = result.frames.reduce(0) { $0 + $1.payload.readableBytes }
            // Every payload byte came from the input, after a header of at least 2 bytes.
            #expect(payloads + 2 * result.frames.count + result.parser.bufferedBytes <= bytes.count, "seed \(seed)")
        }
    }

    @Test("two reads before the end of a read (a nested read): bytes are parsed in order; an empty masked frame costs no copy")
    func appendsBeforeFinishing() {
        let first = Self.sent(opcode: 0x1, key: [5, 6, 7, 8], payload: Array("one".utf8))
        let second = Self.sent(opcode: 0x9, key: [5, 6, 7, 8], payload: [])
        let third = Self.sent(opcode: 0x1, key: [5, 6, 7, 8], payload: Array("three".utf8))
        var wire = first.wire
        wire.writeImmutableBuffer(second.wire)
        wire.writeImmutableBuffer(third.wire)
        var parser = WebSocketFrameParser(maxFrameSize: 1000)
        let cut = first.wire.readableBytes + 3
        parser.append(wire.getSlice(at: 0, length: cut) ?? ByteBuffer())
        guard case .success(let one)? = parser.next() else {
            Issue.record("the first frame should parse")
            return
        }
        // A nested read arrives before this read is finished.
        parser.append(wire.getSlice(at: cut, length: wire.readableBytes - cut) ?? ByteBuffer())
        guard case .success(let ping)? = parser.next(), case .success(let three)? = parser.next() else {
            Issue.record("the later frames should parse")
            return
        }
        #expect(String(buffer: one.payload) == "one")
        #expect(ping.opcode == 0x9 && ping.payload.readableBytes == 0)
        #expect(String(buffer: three.payload) == "three")
        parser.finishRead()
        #expect(parser.bufferedBytes == 0)
    }
}
