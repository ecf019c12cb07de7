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
