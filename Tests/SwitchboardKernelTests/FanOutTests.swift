import JSONPlugin
import NIOCore
import NIOPosix
import Synchronization
import SwitchboardCore
import SwitchboardKernel
import SwitchboardTesting
import Testing

/// Wraps the real JSON encoder and counts how often the broadcast path calls it.
struct CountingEncoder: EventEncoder {
    final class Counter: Sendable {
        let calls = Atomic<Int>(0)
    }
    let name: String
    let subprotocol: String
    let frameKind: FrameKind = .text
    let counter = Counter()
    private let inner = JSONEventEncoder()

    init(name: String = "json") {
        self.name = name
        self.subprotocol = "switchboard.\(name)"
    }

    func encode(_ event: Event, into buffer: inout ByteBuffer) {
        counter.calls.add(1, ordering: .relaxed)
        inner.encode(event, into: &buffer)
    }
    func encode(_ reply: ServerReply, timestamp: Int64, into buffer: inout ByteBuffer) {
        inner.encode(reply, timestamp: timestamp, into: &buffer)
    }
    func decode(_ payload: ByteBuffer) -> Result<ClientMessage, ClientMessageError> { inner.decode(payload) }
}

@Suite(.serialized) struct FanOutTests {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)

    /// Subscribes `count` capturing subscribers spread over all shards.
    func subscribe(_ kernel: Kernel, count: Int, pattern: String, variant: (Int) -> VariantID) async throws -> [CapturingSubscriber] {
        var subscribers: [CapturingSubscriber] = []
        for i in 0..<count {
            let shard = kernel.shards[i % kernel.shards.count]
            let subscriber = CapturingSubscriber(variant: variant(i))
            let added = try await shard.eventLoop.submit { shard.subscribe(TopicPattern(pattern)!, subscriber) }.get()
            #expect(added)
            subscribers.append(subscriber)
        }
        return subscribers
    }

    /// Waits until every shard has run everything queued so far (deliveries and flushes).
    func settle(_ kernel: Kernel) async throws {
        for _ in 0..<3 {
            for shard in kernel.shards { try await shard.eventLoop.submit {}.get() }
        }
    }

    func frames(_ subscribers: [CapturingSubscriber], on kernel: Kernel) async throws -> [[ByteBuffer]] {
        var result: [[ByteBuffer]] = []
        for (i, subscriber) in subscribers.enumerated() {
            let shard = kernel.shards[i % kernel.shards.count]
            result.append(try await shard.eventLoop.submit { subscriber.frames }.get())
        }
        return result
    }

    @Test func oneEventToAThousandSubscribersIsEncodedOnceAndShared() async throws {
        let encoder = CountingEncoder()
        let kernel = Kernel(eventLoopGroup: group, variants: VariantTable(encoders: [encoder]))
        let subscribers = try await subscribe(kernel, count: 1000, pattern: "metrics") { _ in VariantID(index: 0) }

        kernel.publish(Event(topic: "metrics", type: "metrics", data: ["cpu": 0.5], timestamp: 1_704_225_600))
        try await settle(kernel)

        #expect(encoder.counter.calls.load(ordering: .relaxed) == 1)
        #expect(kernel.counters.encodes.load(ordering: .relaxed) == 1)
        #expect(kernel.counters.deliveries.load(ordering: .relaxed) == 1000)
        let received = try await frames(subscribers, on: kernel)
        #expect(received.allSatisfy { $0.count == 1 })
        // Every recipient holds the very same bytes: one storage, no copies.
        let addresses = Set(received.compactMap { $0.first?.withUnsafeReadableBytes { Int(bitPattern: $0.baseAddress) } })
        #expect(addresses.count == 1)
        // The frame is a complete unmasked text frame around the JSON envelope.
        let payload = #"{"type":"metrics","topic":"metrics","timestamp":1704225600,"data":{"cpu":0.5}}"#
        let expected: [UInt8] = [0x81, UInt8(payload.utf8.count)] + Array(payload.utf8)
        #expect(received.first?.first.map { Array($0.readableBytesView) } == expected)
    }

    @Test func eachVariantIsBuiltOnceAndOnlyWhenSomeoneReceivesIt() async throws {
        let json = CountingEncoder(name: "json")
        let other = CountingEncoder(name: "other")
        let unused = CountingEncoder(name: "unused")
        let kernel = Kernel(eventLoopGroup: group, variants: VariantTable(encoders: [json, other, unused]))
        let subscribers = try await subscribe(kernel, count: 1000, pattern: "topic:*") { VariantID(index: $0 % 2) }

        for i in 0..<5 { kernel.publish(Event(topic: "topic:\(i)", type: "t", data: .int(Int64(i)))) }
        kernel.publish(Event(topic: "nobody", type: "t", data: nil))
        try await settle(kernel)

        #expect(json.counter.calls.load(ordering: .relaxed) == 5)
        #expect(other.counter.calls.load(ordering: .relaxed) == 5)
        #expect(unused.counter.calls.load(ordering: .relaxed) == 0)
        #expect(kernel.counters.eventsIn.load(ordering: .relaxed) == 6)
        #expect(kernel.counters.deliveries.load(ordering: .relaxed) == 5000)
        let received = try await frames(subscribers, on: kernel)
        #expect(received.allSatisfy { $0.count == 5 })
    }

    @Test func overlappingPatternsDeliverOnce() async throws {
        let kernel = Kernel(eventLoopGroup: group, variants: VariantTable(encoders: [JSONEventEncoder()]))
        let shard = kernel.shards[0]
        let subscriber = CapturingSubscriber(variant: VariantID(index: 0))
        try await shard.eventLoop.submit {
            _ = shard.subscribe(TopicPattern("*")!, subscriber)
            _ = shard.subscribe(TopicPattern("a:*")!, subscriber)
            _ = shard.subscribe(TopicPattern("a:b")!, subscriber)
        }.get()
        kernel.publish(Event(topic: "a:b", type: "t", data: nil))
        kernel.publish(Event(topic: "a:c", type: "t", data: nil))
        try await settle(kernel)
        let count = try await shard.eventLoop.submit { subscriber.frames.count }.get()
        #expect(count == 2)
    }

    @Test func flushIntervalGathersFramesOfTheIntervalIntoOneFlush() async throws {
        let kernel = Kernel(eventLoopGroup: group, variants: VariantTable(encoders: [JSONEventEncoder()]), flushInterval: .milliseconds(300))
        let shard = kernel.shards[0]
        let subscriber = CapturingSubscriber(variant: VariantID(index: 0))
        try await shard.eventLoop.submit { _ = shard.subscribe(TopicPattern("x")!, subscriber) }.get()
        // The first event after a quiet period is flushed on the next tick.
        kernel.publish(Event(topic: "x", type: "t", data: .int(0)))
        try await settle(kernel)
        let first = try await shard.eventLoop.submit { (subscriber.frames.count, subscriber.flushes) }.get()
        #expect(first == (1, 1))
        // Events published one by one within the interval wait for its end, then leave together.
        for i in 1...5 {
            kernel.publish(Event(topic: "x", type: "t", data: .int(Int64(i))))
            try await settle(kernel)
        }
        let held = try await shard.eventLoop.submit { (subscriber.frames.count, subscriber.flushes) }.get()
        #expect(held == (6, 1))
        try await Task.sleep(for: .milliseconds(600))
        let after = try await shard.eventLoop.submit { (subscriber.frames.count, subscriber.flushes) }.get()
        #expect(after == (6, 2))
        #expect(kernel.counters.flushRounds.load(ordering: .relaxed) == 2)
    }

    @Test func flushesAreBatchedPerLoopTick() async throws {
        let kernel = Kernel(eventLoopGroup: group, variants: VariantTable(encoders: [JSONEventEncoder()]))
        let shard = kernel.shards[0]
        let subscriber = CapturingSubscriber(variant: VariantID(index: 0))
        // Publish 50 events from inside the loop: they are all queued before the flush runs.
        try await shard.eventLoop.submit {
            _ = shard.subscribe(TopicPattern("x")!, subscriber)
            for i in 0..<50 { kernel.publish(Event(topic: "x", type: "t", data: .int(Int64(i)))) }
        }.get()
        try await settle(kernel)
        let (frames, flushes) = try await shard.eventLoop.submit { (subscriber.frames.count, subscriber.flushes) }.get()
        #expect(frames == 50)
        #expect(flushes == 1)
    }

    @Test func idleLoopsAreSkipped() async throws {
        let encoder = CountingEncoder()
        let kernel = Kernel(eventLoopGroup: group, variants: VariantTable(encoders: [encoder]))
        kernel.publish(Event(topic: "x", type: "t", data: nil))
        try await settle(kernel)
        #expect(encoder.counter.calls.load(ordering: .relaxed) == 0)
        #expect(kernel.counters.eventsIn.load(ordering: .relaxed) == 1)
    }
}

@Suite(.serialized) struct VariantFanOutTests {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)

    @Test func thousandSubscribersOverFourVariantsMeanFourFramesTwoEncodingsTwoCompressions() async throws {
        let json = CountingEncoder(name: "json")
        let other = CountingEncoder(name: "other")
        let profile = CompressionProfile(level: 6, memLevel: 8, minSize: 0)
        let table = VariantTable(encoders: [json, other], compressionProfiles: [profile])
        let variants = [
            try #require(table.variant(forEncoder: "json")),
            try #require(table.variant(forEncoder: "json", profile: profile, windowBits: 15)),
            try #require(table.variant(forEncoder: "other")),
            try #require(table.variant(forEncoder: "other", profile: profile, windowBits: 15)),
        ]
        let kernel = Kernel(eventLoopGroup: group, variants: table)
        var subscribers: [CapturingSubscriber] = []
        for i in 0..<1000 {
            let shard = kernel.shards[i % kernel.shards.count]
            let subscriber = CapturingSubscriber(variant: variants[i % 4])
            _ = try await shard.eventLoop.submit { shard.subscribe(TopicPattern("metrics")!, subscriber) }.get()
            subscribers.append(subscriber)
        }
        kernel.publish(Event(topic: "metrics", type: "metrics", data: ["text": .string(String(repeating: "abc", count: 100))]))
        for _ in 0..<3 { for shard in kernel.shards { try await shard.eventLoop.submit {}.get() } }

        #expect(kernel.counters.frameBuilds.load(ordering: .relaxed) == 4)
        #expect(kernel.counters.encodes.load(ordering: .relaxed) == 2)
        #expect(json.counter.calls.load(ordering: .relaxed) == 1)
        #expect(other.counter.calls.load(ordering: .relaxed) == 1)
        #expect(kernel.counters.compressions.load(ordering: .relaxed) == 2)
        #expect(kernel.counters.deliveries.load(ordering: .relaxed) == 1000)

        var storages: [Int: Set<Int>] = [:]
        for (i, subscriber) in subscribers.enumerated() {
            let shard = kernel.shards[i % kernel.shards.count]
            let frames = try await shard.eventLoop.submit { subscriber.frames }.get()
            #expect(frames.count == 1)
            let address = frames.first?.withUnsafeReadableBytes { Int(bitPattern: $0.baseAddress) } ?? 0
            storages[i % 4, default: []].insert(address)
            let first = try #require(frames.first.flatMap { $0.getInteger(at: $0.readerIndex, as: UInt8.self) })
            // Compressed variants carry RSV1 (0x40).
            #expect((first & 0x40 != 0) == (i % 2 == 1))
        }
        #expect(storages.values.allSatisfy { $0.count == 1 })
    }

    @Test func smallPayloadsStayUncompressed() async throws {
        let profile = CompressionProfile(level: 6, memLevel: 8, minSize: 1000)
        let table = VariantTable(encoders: [JSONEventEncoder()], compressionProfiles: [profile])
        let variant = try #require(table.variant(forEncoder: "json", profile: profile, windowBits: 15))
        let kernel = Kernel(eventLoopGroup: group, variants: table)
        let shard = kernel.shards[0]
        let subscriber = CapturingSubscriber(variant: variant)
        _ = try await shard.eventLoop.submit { shard.subscribe(TopicPattern("x")!, subscriber) }.get()
        kernel.publish(Event(topic: "x", type: "t", data: "small"))
        for _ in 0..<3 { try await shard.eventLoop.submit {}.get() }
        let frame = try await shard.eventLoop.submit { subscriber.frames.first }.get()
        #expect(frame.flatMap { $0.getInteger(at: $0.readerIndex, as: UInt8.self) } == 0x81)
        #expect(kernel.counters.compressions.load(ordering: .relaxed) == 0)
    }
}
