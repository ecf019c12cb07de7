import Dispatch
import JSONPlugin
import NIOCore
import NIOPosix
import SwitchboardCore
import SwitchboardKernel
import SwitchboardTesting
import Testing

/// History in the kernel: positions, resume with `since`, `last`, retained events, and the
/// seam between a replay and live delivery.
@Suite(.serialized) struct HistoryTests {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)

    func kernel(size: Int = 5, ttl: Int64 = 0) -> Kernel {
        Kernel(
            eventLoopGroup: group, variants: VariantTable(encoders: [JSONEventEncoder()]),
            history: [HistoryRule(patterns: [TopicPattern("news")!, TopicPattern("feed:*")!], size: size, ttlNanoseconds: ttl)],
            epoch: "e1"
        )
    }

    func settle(_ kernel: Kernel) async throws {
        for _ in 0..<3 {
            for shard in kernel.shards { try await shard.eventLoop.submit {}.get() }
        }
    }

    func replay(_ kernel: Kernel, _ topic: String, _ options: SubscribeOptions, shard index: Int = 0) async throws -> HistoryReplay {
        let shard = kernel.shards[index]
        return try await shard.eventLoop.submit { shard.replay(for: TopicPattern(topic)!, options: options) }.get()
    }

    func offsets(_ replay: HistoryReplay) -> [Int64] {
        replay.events.compactMap { $0.event.position?.offset }
    }

    @Test func positionsResumeAndOverflow() async throws {
        let kernel = kernel()
        for n in 1...8 { kernel.publish(Event(topic: "news", type: "n", data: .int(Int64(n)))) }
        try await settle(kernel)
        for index in kernel.shards.indices {
            let resumed = try await replay(kernel, "news", SubscribeOptions(since: StreamPosition(epoch: "e1", offset: 5)), shard: index)
            #expect(resumed.history == SubscriptionHistory(position: StreamPosition(epoch: "e1", offset: 8), recovered: true, replayed: 3))
            #expect(offsets(resumed) == [6, 7, 8])
        }
        // Size 5 keeps 4…8: offset 3 is the oldest position still resumable (4 follows it).
        #expect(offsets(try await replay(kernel, "news", SubscribeOptions(since: StreamPosition(epoch: "e1", offset: 3)))) == [4, 5, 6, 7, 8])
        let tooOld = try await replay(kernel, "news", SubscribeOptions(since: StreamPosition(epoch: "e1", offset: 2)))
        #expect(tooOld.history?.recovered == false && tooOld.events.isEmpty && tooOld.history?.position?.offset == 8)
        let otherEpoch = try await replay(kernel, "news", SubscribeOptions(since: StreamPosition(epoch: "old", offset: 7)))
        #expect(otherEpoch.history?.recovered == false && otherEpoch.events.isEmpty)
        let upToDate = try await replay(kernel, "news", SubscribeOptions(since: StreamPosition(epoch: "e1", offset: 8)))
        #expect(upToDate.history?.recovered == true && upToDate.events.isEmpty)
        let future = try await replay(kernel, "news", SubscribeOptions(since: StreamPosition(epoch: "e1", offset: 99)))
        #expect(future.history?.recovered == false && !future.loopIsBehind)
        // Client-controlled extremes: no arithmetic on them traps.
        let extreme = try await replay(kernel, "news", SubscribeOptions(since: StreamPosition(epoch: "e1", offset: .max)))
        #expect(extreme.history?.recovered == false)
        #expect(offsets(try await replay(kernel, "news", SubscribeOptions(last: Int(Int32.max)))) == [4, 5, 6, 7, 8])
        #expect(offsets(try await replay(kernel, "news", SubscribeOptions(last: 2))) == [7, 8])
        let plain = try await replay(kernel, "news", SubscribeOptions())
        #expect(plain.events.isEmpty && plain.history?.position == StreamPosition(epoch: "e1", offset: 8))
        // A topic of the rule that has no event yet: position 0, resumable from 0.
        let fresh = try await replay(kernel, "feed:x", SubscribeOptions(since: StreamPosition(epoch: "e1", offset: 0)))
        #expect(fresh.history == SubscriptionHistory(position: StreamPosition(epoch: "e1", offset: 0), recovered: true, replayed: 0))
        // No rule: no position, and a resume says it cannot recover.
        kernel.publish(Event(topic: "other", type: "o", data: .null))
        try await settle(kernel)
        let none = try await replay(kernel, "other", SubscribeOptions(since: StreamPosition(epoch: "e1", offset: 0)))
        #expect(none.history == SubscriptionHistory(position: nil, recovered: false))
        try await group.shutdownGracefully()
    }

    /// A client that saw offset 1 on a fast loop resumes on a loop that has not delivered it
    /// yet: the loop says it is behind (the handler asks again after its queued
    /// deliveries), and the second look finds the event.
    @Test func aLoopBehindTheClientAsksAgain() async throws {
        let kernel = kernel()
        let slow = kernel.shards[1]
        let since = SubscribeOptions(since: StreamPosition(epoch: "e1", offset: 1))
        let blocked = slow.eventLoop.submit { () -> HistoryReplay in
            // Published while this loop is busy: the event waits in its queue.
            kernel.publish(Event(topic: "news", type: "n", data: .int(1)))
            return slow.replay(for: TopicPattern("news")!, options: since)
        }
        #expect(try await blocked.get().loopIsBehind)
        let again = try await slow.eventLoop.submit { slow.replay(for: TopicPattern("news")!, options: since, allowLoopBehind: false) }.get()
        #expect(again.history == SubscriptionHistory(position: StreamPosition(epoch: "e1", offset: 1), recovered: true, replayed: 0))
        // A position no loop will ever reach is refused on the second look.
        let never = try await slow.eventLoop.submit {
            slow.replay(for: TopicPattern("news")!, options: SubscribeOptions(since: StreamPosition(epoch: "e1", offset: 2)), allowLoopBehind: false)
        }.get()
        #expect(never.history?.recovered == false)
        try await group.shutdownGracefully()
    }

    @Test func ttlExpiresEventsButNotTheOffset() async throws {
        // 400 ms: long enough that event 4 cannot expire between its publish and the replay
        // below on a loaded machine (50 ms did, once, while other suites ran in parallel).
        let kernel = kernel(size: 100, ttl: 400_000_000)
        for n in 1...3 { kernel.publish(Event(topic: "news", type: "n", data: .int(Int64(n)))) }
        try await settle(kernel)
        try await Task.sleep(for: .milliseconds(500))
        let expired = try await replay(kernel, "news", SubscribeOptions(since: StreamPosition(epoch: "e1", offset: 1)))
        #expect(expired.history == SubscriptionHistory(position: StreamPosition(epoch: "e1", offset: 3), recovered: false))
        kernel.publish(Event(topic: "news", type: "n", data: .int(4)))
        try await settle(kernel)
        #expect(offsets(try await replay(kernel, "news", SubscribeOptions(since: StreamPosition(epoch: "e1", offset: 3)))) == [4])
        try await group.shutdownGracefully()
    }

    @Test func retainIsTheOneEventCaseOfHistory() async throws {
        let kernel = kernel()
        kernel.publish(Event(topic: "status", type: "s", data: .int(1)), retain: true)
        kernel.publish(Event(topic: "status", type: "s", data: .int(2)), retain: true)
        try await settle(kernel)
        let latest = try await replay(kernel, "status", SubscribeOptions())
        #expect(latest.events.map(\.event.data) == [.int(2)] && latest.history == nil)
        #expect(try await replay(kernel, "stat*", SubscribeOptions()).events.map(\.event.data) == [.int(2)])
        // Retained and with history: the newest is replayed without asking, with its position.
        kernel.publish(Event(topic: "news", type: "n", data: .int(1)), retain: true)
        try await settle(kernel)
        let both = try await replay(kernel, "news", SubscribeOptions())
        #expect(offsets(both) == [1] && both.history?.replayed == 1)
        try await group.shutdownGracefully()
    }

    /// Publishers on four threads while subscribers resume on both loops: each subscriber
    /// sees every offset after its `since` exactly once, in order — replay then live.
    @Test func replayAndLiveMeetWithoutGapOrDuplicate() async throws {
        let kernel = kernel(size: 10_000)
        let total = 4_000
        let publishers = DispatchGroup()
        for worker in 0..<4 {
            DispatchQueue.global().async(group: publishers) {
                for _ in 0..<(total / 4) { kernel.publish(Event(topic: "news", type: "n", data: .int(Int64(worker)))) }
            }
        }
        var subscribers: [(CapturingSubscriber, Int64, LoopShard)] = []
        for round in 0..<20 {
            try await Task.sleep(for: .microseconds(300))
            let shard = kernel.shards[round % kernel.shards.count]
            let subscriber = CapturingSubscriber(variant: VariantID(index: 0))
            let since = try await shard.eventLoop.submit { () -> Int64 in
                // Resume from a little behind what this loop has: the replay is non-empty.
                let now = shard.replay(for: TopicPattern("news")!, options: SubscribeOptions()).history?.position?.offset ?? 0
                let since = max(0, now - 5)
                let replay = shard.replay(for: TopicPattern("news")!, options: SubscribeOptions(since: StreamPosition(epoch: "e1", offset: since)))
                _ = shard.subscribe(TopicPattern("news")!, subscriber)
                shard.send(replay.events, to: subscriber)
                return since
            }.get()
            subscribers.append((subscriber, since, shard))
        }
        await withCheckedContinuation { done in publishers.notify(queue: .global()) { done.resume() } }
        try await settle(kernel)
        for (subscriber, since, shard) in subscribers {
            let offsets = try await shard.eventLoop.submit { subscriber.frames.compactMap(Self.offset(of:)) }.get()
            #expect(offsets == Array((since + 1)...Int64(total)), "since \(since): \(offsets.prefix(8))…")
        }
        try await group.shutdownGracefully()
    }

    static func offset(of frame: ByteBuffer) -> Int64? {
        guard let payload = ServerFrame.payload(of: frame), let json = try? JSONParser.parse(payload.readableBytesView),
            case .int(let offset)? = json["position"]?["offset"]
        else { return nil }
        return offset
    }
}

/// Positions read from clients: hostile text never traps and is refused as a whole.
@Suite struct StreamPositionParsingTests {
    @Test func eventIDsAndJSONPositions() {
        #expect(StreamPosition(eventID: "k3x9:41") == StreamPosition(epoch: "k3x9", offset: 41))
        for bad in ["", ":", "e:", ":5", "e:-1", "e:1.5", "e:99999999999999999999", "e:9223372036854775808", String(repeating: "x", count: 70) + ":1", "e:٣"] {
            #expect(StreamPosition(eventID: bad) == nil, "\(bad)")
        }
        #expect(StreamPosition(json: ["epoch": "e", "offset": 3]) == StreamPosition(epoch: "e", offset: 3))
        for bad: JSONValue in [["epoch": "e", "offset": -1], ["epoch": "e", "offset": 1.5], ["epoch": 5, "offset": 1], ["epoch": "", "offset": 1], .string("e:1"), .null] {
            #expect(StreamPosition(json: bad) == nil, "\(bad)")
        }
        var random = SeededRandom.forTest("event ids")
        for _ in 0..<10_000 {
            let length = Int(random.next(upperBound: UInt64(40)))
            let bytes = (0..<length).map { _ in [UInt8(ascii: ":"), UInt8(ascii: "9"), UInt8(ascii: "0"), UInt8(ascii: ","), UInt8(ascii: "e"), 0xC3, 0xA9][Int(random.next(upperBound: UInt64(7)))] }
            if let position = StreamPosition(eventID: String(decoding: bytes, as: UTF8.self)) { #expect(position.offset >= 0) }
        }
    }
}
