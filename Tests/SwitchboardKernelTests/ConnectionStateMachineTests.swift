import NIOCore
import SwitchboardCore
import SwitchboardKernel
import Testing

@Suite struct OutboundStateMachineTests {
    func frame(_ size: Int, _ byte: UInt8 = 1) -> ByteBuffer { ByteBuffer(repeating: byte, count: size) }

    func machine(maxMessages: Int = 4, maxBytes: Int = 1 << 20, policy: SlowConsumerPolicy = .dropOldest) -> OutboundStateMachine {
        OutboundStateMachine(queue: OutboundQueue(maxMessages: maxMessages, maxBytes: maxBytes, policy: policy))
    }

    @Test func smallFramesAreGatheredUntilTheFlushRound() {
        var outbound = machine()
        #expect(outbound.offer(frame(10, 1)) == (.accepted, .none))
        #expect(outbound.offer(frame(10, 2)) == (.accepted, .none))
        var expected = frame(10, 1)
        expected.writeImmutableBuffer(frame(10, 2))
        #expect(outbound.takeGathered() == expected)
        #expect(outbound.takeGathered() == nil)
    }

    @Test func aLargeFrameLeavesAfterWhatWasGathered() {
        var outbound = machine()
        _ = outbound.offer(frame(10, 1))
        let large = frame(OutboundStateMachine.gatherLimit + 1, 2)
        #expect(outbound.offer(large) == (.accepted, .two(frame(10, 1), large)))
        #expect(outbound.offer(large) == (.accepted, .one(large)))
    }

    @Test func aFullOutboxIsHandedOverWithoutWaiting() {
        var outbound = machine()
        var writes: [OutboundStateMachine.Writes] = []
        for _ in 0..<(OutboundStateMachine.outboxLimit / 4096) {
            writes.append(outbound.offer(frame(4096)).writes)
        }
        #expect(writes.dropLast().allSatisfy { $0 == .none })
        guard case .one(let outbox) = writes.last else {
            Issue.record("expected the outbox, got \(String(describing: writes.last))")
            return
        }
        #expect(outbox.readableBytes == OutboundStateMachine.outboxLimit)
    }

    @Test func whileUnwritableFramesQueueUnderThePolicyAndDrainInOrder() {
        var outbound = machine(maxMessages: 2)
        _ = outbound.offer(frame(10, 0))  // gathered before the socket filled up
        #expect(outbound.writabilityChanged(to: false) == false)
        #expect(outbound.offer(frame(10, 1)) == (.accepted, .none))
        #expect(outbound.offer(frame(10, 2)) == (.accepted, .none))
        #expect(outbound.offer(frame(10, 3)) == (.acceptedAfterDropping(1), .none))
        #expect(outbound.nextQueued() == nil)  // not while unwritable
        let shouldDrain = outbound.writabilityChanged(to: true)
        #expect(shouldDrain)
        #expect(outbound.takeGathered() == frame(10, 0))
        #expect(outbound.nextQueued() == frame(10, 2))
        // A write during the drain made the socket unwritable again: the drain stops there.
        _ = outbound.writabilityChanged(to: false)
        #expect(outbound.nextQueued() == nil)
        // New frames queue behind the old ones even when the socket is writable again.
        _ = outbound.writabilityChanged(to: true)
        #expect(outbound.offer(frame(10, 4)) == (.accepted, .none))
        #expect(outbound.nextQueued() == frame(10, 3))
        #expect(outbound.nextQueued() == frame(10, 4))
        #expect(outbound.nextQueued() == nil)
        #expect(outbound.queuedBytes == 0)
    }

    @Test func disconnectPolicyOverflowsAndClosingTakesNothingMore() {
        var outbound = machine(maxMessages: 1, policy: .disconnect)
        _ = outbound.writabilityChanged(to: false)
        #expect(outbound.offer(frame(10)).outcome == .accepted)
        #expect(outbound.offer(frame(10)).outcome == .overflow)
        _ = outbound.close()
        #expect(outbound.queuedCount == 0)
        #expect(outbound.offer(frame(10)).outcome == .closed)
        #expect(outbound.writabilityChanged(to: true) == false)
    }

    @Test func closingKeepsWhatWasGatheredForBeforeTheCloseFrame() {
        var outbound = machine()
        _ = outbound.offer(frame(10, 7))
        #expect(outbound.close() == frame(10, 7))
        #expect(outbound.isClosing)
    }

    /// Seeded random operations against a model: order kept, bounds never exceeded.
    @Test func randomOperationsKeepOrderAndBounds() {
        var random = SeededRandom.forTest("OutboundStateMachineTests.randomOperationsKeepOrderAndBounds")
        let seed = random.seed
        var outbound = machine(maxMessages: 8, maxBytes: 40_000, policy: .dropOldest)
        var written: [UInt32] = []
        var next: UInt32 = 0
        func record(_ buffer: ByteBuffer) {
            var buffer = buffer
            while buffer.readableBytes >= 4, let size = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) {
                let id = buffer.getInteger(at: buffer.readerIndex + 4, as: UInt32.self) ?? 0
                written.append(id)
                buffer.moveReaderIndex(forwardBy: Int(size))
            }
        }
        for _ in 0..<5_000 {
            switch random.next() % 4 {
            case 0, 1:
                let size = 8 + Int(random.next() % 9000)
                var frame = ByteBuffer()
                frame.writeInteger(UInt32(size))
                frame.writeInteger(next)
                frame.writeRepeatingByte(0, count: size - 8)
                next += 1
                let (_, writes) = outbound.offer(frame)
                switch writes {
                case .none: break
                case .one(let a): record(a)
                case .two(let a, let b): record(a); record(b)
                }
                #expect(outbound.queuedCount <= 8, "seed \(seed)")
                #expect(outbound.queuedBytes <= 40_000, "seed \(seed)")
            case 2:
                if outbound.writabilityChanged(to: !outbound.isWritable) {
                    if let gathered = outbound.takeGathered() { record(gathered) }
                    while let frame = outbound.nextQueued() { record(frame) }
                }
            default:
                if let gathered = outbound.takeGathered() { record(gathered) }
            }
        }
        // Frames leave in the order they were accepted (drops only remove, never reorder).
        #expect(written == written.sorted(), "seed \(seed)")
        #expect(Set(written).count == written.count, "seed \(seed)")
    }
}

@Suite struct WebSocketInboundStateMachineTests {
    typealias Machine = WebSocketInboundStateMachine

    func frame(_ opcode: Machine.Opcode, _ text: String, fin: Bool = true, masked: Bool = true, rsv1: Bool = false) -> Machine.Frame {
        Machine.Frame(opcode: opcode.rawValue, fin: fin, rsv1: rsv1, masked: masked, payload: ByteBuffer(string: text))
    }

    @Test func reassemblesFragmentsWithinTheLimit() {
        var inbound = Machine(maxMessageSize: 10)
        #expect(inbound.received(frame(.text, "hello ", fin: false)) == .none)
        #expect(inbound.received(frame(.ping, "p")) == .ping(ByteBuffer(string: "p")))  // interleaved control frame
        #expect(inbound.received(frame(.continuation, "you")) == .message(text: true, payload: ByteBuffer(string: "hello you")))
        #expect(inbound.received(frame(.text, "hello ", fin: false)) == .none)
        #expect(inbound.received(frame(.continuation, "world")) == .fail(code: 1009, reason: "message too big"))
    }

    @Test func refusesProtocolViolations() {
        var inbound = Machine(maxMessageSize: 100)
        #expect(inbound.received(frame(.text, "x", masked: false)) == .fail(code: 1002, reason: "client frames must be masked"))
        #expect(inbound.received(frame(.text, "x", rsv1: true)) == .fail(code: 1002, reason: "reserved bits set"))
        #expect(inbound.received(frame(.continuation, "x")) == .fail(code: 1002, reason: "continuation frame without a message"))
        #expect(inbound.received(frame(.ping, "x", fin: false)) == .fail(code: 1002, reason: "invalid control frame"))
        #expect(inbound.received(Machine.Frame(opcode: 0x3, payload: ByteBuffer())) == .fail(code: 1002, reason: "unknown opcode"))
        let invalid = ByteBuffer(bytes: [0xC3, 0x28])
        #expect(inbound.received(Machine.Frame(opcode: 1, payload: invalid)) == .fail(code: 1007, reason: "invalid UTF-8 in text message"))
        #expect(inbound.received(Machine.Frame(opcode: 2, payload: invalid)) == .message(text: false, payload: invalid))
    }

    @Test func closeHandshakeBothWays() {
        var peerFirst = Machine(maxMessageSize: 100)
        var payload = ByteBuffer()
        payload.writeInteger(UInt16(4000))
        payload.writeString("bye")
        #expect(peerFirst.received(Machine.Frame(opcode: 8, payload: payload)) == .peerClosed(code: 4000, reason: "", violation: false))
        #expect(peerFirst.received(frame(.text, "late")) == .none)

        var badCode = Machine(maxMessageSize: 100)
        #expect(badCode.received(Machine.Frame(opcode: 8, payload: ByteBuffer(bytes: [0x03, 0xED]))) == .peerClosed(code: 1002, reason: "invalid close code", violation: true))
        var oneByte = Machine(maxMessageSize: 100)
        #expect(oneByte.received(Machine.Frame(opcode: 8, payload: ByteBuffer(bytes: [0x03]))) == .peerClosed(code: 1002, reason: "invalid close payload", violation: true))

        var ourFirst = Machine(maxMessageSize: 100)
        let first = ourFirst.startClose()
        let second = ourFirst.startClose()
        #expect(first)
        #expect(!second)
        #expect(ourFirst.received(frame(.text, "ignored")) == .none)
        #expect(ourFirst.received(Machine.Frame(opcode: 8, payload: ByteBuffer())) == .closeHandshakeDone)
    }

    @Test func inflatesWithTheOutputLimit() throws {
        let settings = DeflateSettings(windowBits: 15, level: 6, memLevel: 8)
        let deflater = try #require(Deflater(settings: settings))
        var compressed = ByteBuffer()
        deflater.compress(ByteBuffer(string: String(repeating: "a", count: 5000)), into: &compressed, resetAfter: true)
        var inbound = Machine(maxMessageSize: 4000, decompression: InboundDecompression(windowBits: 15, noContextTakeover: true))
        #expect(inbound.received(Machine.Frame(opcode: 1, rsv1: true, payload: compressed)) == .fail(code: 1009, reason: "message too big after decompression"))
        var small = ByteBuffer()
        deflater.compress(ByteBuffer(string: "hello"), into: &small, resetAfter: true)
        var fresh = Machine(maxMessageSize: 4000, decompression: InboundDecompression(windowBits: 15, noContextTakeover: true))
        #expect(fresh.received(Machine.Frame(opcode: 1, rsv1: true, payload: small)) == .message(text: true, payload: ByteBuffer(string: "hello")))
        #expect(fresh.received(Machine.Frame(opcode: 1, rsv1: true, payload: ByteBuffer(bytes: [0xFF, 0xFF, 0xFF]))) == .fail(code: 1007, reason: "invalid compressed data"))
    }

    /// A message that ends its deflate stream (BFINAL, RFC 7692 §7.2.3.4), as Python's
    /// `zlib.compressobj(6, DEFLATED, -15)` with a final flush makes it: accepted, twice in a
    /// row (the stream is reset after its end). Found by the fuzz target's seed.
    @Test func inflatesAMessageWithAFinalBlock() {
        let hello = ByteBuffer(bytes: [0xCB, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00])
        var inbound = Machine(maxMessageSize: 100, decompression: InboundDecompression(windowBits: 15, noContextTakeover: false))
        #expect(inbound.received(Machine.Frame(opcode: 1, rsv1: true, payload: hello)) == .message(text: true, payload: ByteBuffer(string: "hello")))
        #expect(inbound.received(Machine.Frame(opcode: 1, rsv1: true, payload: hello)) == .message(text: true, payload: ByteBuffer(string: "hello")))
        var trailing = hello
        trailing.writeBytes([0x01, 0x02])
        #expect(inbound.received(Machine.Frame(opcode: 1, rsv1: true, payload: trailing)) == .fail(code: 1007, reason: "invalid compressed data"))
    }
}

@Suite struct ClientSessionTests {
    func pipeline(maxSubscriptions: Int = 2, topics: [String] = ["*"]) -> EndpointPipeline {
        EndpointPipeline(
            path: "/ws", encoders: [], topics: topics.compactMap { TopicPattern($0) },
            defaultSubscriptions: [TopicPattern("metrics")].compactMap { $0 }, filters: [],
            heartbeatInterval: .seconds(30), heartbeatTimeout: .seconds(10),
            maxMessageSize: 65536, maxSubscriptions: maxSubscriptions, maxTopicLength: 16,
            sendQueue: SendQueueLimits(), mode: .pubsub
        )
    }

    @Test func subscribeUnsubscribeAndLimits() {
        let pipeline = pipeline()
        var session = ClientSession(principal: nil)
        let metrics = TopicPattern("metrics")!
        #expect(session.start(pipeline: pipeline, nowMilliseconds: 0) == [.subscribe(metrics), .replayRetained([metrics])])
        let news = TopicPattern("news")!
        #expect(session.received(.subscribe("news"), pipeline: pipeline) == [.join(news, reply: "news", SubscribeOptions())])
        #expect(session.received(.subscribe("news"), pipeline: pipeline) == [.reply(.subscribed("news"))])
        #expect(session.received(.subscribe("other"), pipeline: pipeline) == [.reply(.error(code: "too_many_subscriptions", message: "at most 2 subscriptions per connection"))])
        #expect(session.received(.unsubscribe("news"), pipeline: pipeline) == [.unsubscribe(news), .reply(.unsubscribed("news"))])
        #expect(session.received(.ping, pipeline: pipeline) == [.reply(.pong)])
        #expect(session.end() == [metrics])
    }

    @Test func longTopicsAndHostileTextAreNotEchoedInFull() {
        let pipeline = pipeline()
        var session = ClientSession(principal: nil)
        let long = String(repeating: "x", count: 5000)
        guard case .reply(.error(let code, let message))? = session.received(.subscribe(long), pipeline: pipeline).first else {
            Issue.record("expected an error reply")
            return
        }
        #expect(code == "bad_topic")
        #expect(message.count < 300)
        guard case .reply(.error(_, let unknown))? = session.received(.other(type: long, message: .null), pipeline: pipeline).first else {
            Issue.record("expected an error reply")
            return
        }
        #expect(unknown.count < 300)
        // 17 bytes is over this endpoint's max_topic_length of 16.
        #expect(session.received(.subscribe("abcdefghijklmnopq"), pipeline: pipeline).first.map { if case .reply(.error("bad_topic", _)) = $0 { true } else { false } } == true)
    }

    @Test func forbiddenTopicsAreCounted() {
        let pipeline = pipeline(topics: ["public:*", "metrics"])
        var session = ClientSession(principal: nil)
        #expect(session.received(.subscribe("admin"), pipeline: pipeline) == [.forbidden(.error(code: "forbidden", message: "subscription to 'admin' is not allowed"))])
    }

    /// `exp` claims are the token's to choose: no value may trap the arithmetic.
    @Test func expiryArithmeticNeverTraps() {
        let now: Int64 = 1_700_000_000_000
        func delay(_ expiresAt: Int64) -> Int64? {
            ClientSession(principal: Principal(identity: "x", expiresAt: expiresAt)).expiryDelay(nowMilliseconds: now)
        }
        #expect(delay(1_700_000_060) == 60_000)
        #expect(delay(1_600_000_000) == 0)
        #expect(delay(10_000_000_000_000_000) == nil)  // 1e16: past any timer
        #expect(delay(Int64.max) == nil)
        #expect(delay(Int64.min) == 0)
        #expect(delay(9_300_000_000_000_000) == nil)
        #expect(ClientSession(principal: Principal(identity: "x")).expiryDelay(nowMilliseconds: now) == nil)
    }

    @Test func refreshAppliesOnlyTheSameSubject() {
        let pipeline = pipeline()
        var session = ClientSession(principal: Principal(identity: "alice", expiresAt: 100))
        #expect(session.received(.other(type: "refresh", message: ["type": "refresh", "data": "t"]), pipeline: pipeline) == [.verifyRefresh("t")])
        #expect(session.received(.other(type: "refresh", message: ["type": "refresh", "data": "t"]), pipeline: pipeline).first == .reply(.error(code: "refresh_in_progress", message: "a refresh is already being verified")))
        let other = session.refreshFinished(.admit(Principal(identity: "mallory")), pipeline: pipeline, nowMilliseconds: 0)
        #expect(other == [.reply(.error(code: "refresh_failed", message: "the new token is for a different subject"))])
        _ = session.received(.other(type: "refresh", message: ["type": "refresh", "data": "t"]), pipeline: pipeline)
        let same = session.refreshFinished(.admit(Principal(identity: "alice", expiresAt: 200)), pipeline: pipeline, nowMilliseconds: 100_000)
        #expect(same == [.armExpiry(milliseconds: 100_000), .reply(.refreshed(expiresAt: 200))])
    }
}

