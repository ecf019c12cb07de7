import NIOCore
import SwitchboardCore
import SwitchboardKernel
import Testing

@Suite struct HeartbeatStateMachineTests {
    let second: Int64 = 1_000_000_000

    @Test func pingsAfterIntervalAndDropsAfterTimeout() {
        var machine = HeartbeatStateMachine(interval: 30 * second, timeout: 10 * second, now: 0)
        #expect(machine.tick(now: 0) == (.none, 30 * second))
        #expect(machine.tick(now: 30 * second) == (.sendPing, 40 * second))
        #expect(machine.tick(now: 35 * second) == (.none, 40 * second))
        #expect(machine.tick(now: 40 * second).action == .closeDeadPeer)
    }

    @Test func anyFrameFromThePeerResetsTheTimers() {
        var machine = HeartbeatStateMachine(interval: 30 * second, timeout: 10 * second, now: 0)
        _ = machine.tick(now: 30 * second)  // ping sent
        machine.heard(now: 33 * second)  // pong
        #expect(machine.tick(now: 40 * second) == (.none, 63 * second))
        machine.heard(now: 50 * second)  // data keeps it alive without pings
        #expect(machine.tick(now: 63 * second) == (.none, 80 * second))
    }

    @Test func zeroIntervalDisables() {
        var machine = HeartbeatStateMachine(interval: 0, timeout: 10 * second, now: 0)
        #expect(machine.tick(now: 1_000 * second) == (.none, Int64.max))
    }
}

@Suite struct OutboundQueueTests {
    func frame(_ size: Int) -> ByteBuffer { ByteBuffer(repeating: 1, count: size) }

    @Test func writesDirectlyWhileWritable() {
        var queue = OutboundQueue(maxMessages: 2, maxBytes: 100, policy: .dropOldest)
        #expect(queue.offer(frame(10), writable: true) == .writeNow)
        #expect(queue.isEmpty)
    }

    @Test func dropOldestKeepsTheNewestWithinBounds() {
        var queue = OutboundQueue(maxMessages: 2, maxBytes: 100, policy: .dropOldest)
        #expect(queue.offer(ByteBuffer(bytes: [1]), writable: false) == .queued)
        #expect(queue.offer(ByteBuffer(bytes: [2]), writable: false) == .queued)
        #expect(queue.offer(ByteBuffer(bytes: [3]), writable: false) == .queuedAfterDropping(1))
        // Order is kept even once writable again: queued frames go first.
        #expect(queue.offer(ByteBuffer(bytes: [4]), writable: true) == .queuedAfterDropping(1))
        #expect(queue.next()?.frame == ByteBuffer(bytes: [3]))
        #expect(queue.next()?.frame == ByteBuffer(bytes: [4]))
        #expect(queue.next() == nil)
        #expect(queue.queuedBytes == 0)
    }

    @Test func byteBoundAppliesToo() {
        var queue = OutboundQueue(maxMessages: 100, maxBytes: 25, policy: .dropOldest)
        _ = queue.offer(frame(10), writable: false)
        _ = queue.offer(frame(10), writable: false)
        #expect(queue.offer(frame(10), writable: false) == .queuedAfterDropping(1))
        #expect(queue.queuedBytes == 20)
    }

    @Test func conflateKeepsTheNewestEventPerTopicInPlace() {
        let table = VariantTable(encoders: [])
        func event(_ topic: String, _ n: Int) -> PreparedEvent {
            PreparedEvent(event: Event(topic: topic, type: "t", data: .int(Int64(n))), table: table)
        }
        var queue = OutboundQueue(maxMessages: 2, maxBytes: 100, policy: .conflate)
        #expect(queue.offer(frame(10), event: event("a", 1), writable: false) == .queued)
        #expect(queue.offer(frame(10), event: event("b", 1), writable: false) == .queued)
        #expect(queue.offer(frame(12), event: event("a", 2), writable: false) == .queuedAfterDropping(1))
        #expect(queue.offer(frame(14), event: event("a", 3), writable: false) == .queuedAfterDropping(1))
        #expect(queue.count == 2)
        #expect(queue.queuedBytes == 24)
        // A third topic past max_messages: the oldest goes, as under drop_oldest.
        #expect(queue.offer(frame(10), event: event("c", 1), writable: false) == .queuedAfterDropping(1))
        #expect(queue.next()?.event?.event.data == .int(1))  // b's only event
        #expect(queue.next()?.event?.event.topic == "c")
        #expect(queue.next() == nil)
        // After the drain, "a" is a new topic again: its slot was released with its entry.
        #expect(queue.offer(frame(10), event: event("a", 4), writable: false) == .queued)
        #expect(queue.offer(frame(10), event: event("a", 5), writable: false) == .queuedAfterDropping(1))
        #expect(queue.next()?.event?.event.data == .int(5))
        #expect(queue.queuedBytes == 0)
    }

    @Test func repliesOutliveEventsWhenTheQueueDrops() {
        let table = VariantTable(encoders: [])
        func event(_ topic: String) -> PreparedEvent { PreparedEvent(event: Event(topic: topic, type: "t", data: nil), table: table) }
        for policy in [SlowConsumerPolicy.dropOldest, .conflate] {
            var queue = OutboundQueue(maxMessages: 3, maxBytes: 1000, policy: policy)
            _ = queue.offer(ByteBuffer(bytes: [1]), writable: false)  // a reply
            _ = queue.offer(ByteBuffer(bytes: [2]), event: event("a"), writable: false)
            _ = queue.offer(ByteBuffer(bytes: [3]), event: event("b"), writable: false)
            #expect(queue.offer(ByteBuffer(bytes: [4]), event: event("c"), writable: false) == .queuedAfterDropping(1))
            #expect(queue.offer(ByteBuffer(bytes: [5]), event: event("c"), writable: false) == (policy == .conflate ? .queuedAfterDropping(1) : .queuedAfterDropping(1)))
            var left: [UInt8] = []
            while let entry = queue.next() { left += Array(entry.frame.readableBytesView) }
            #expect(left == (policy == .conflate ? [1, 3, 5] : [1, 4, 5]), "\(policy)")
        }
    }

    @Test func conflateUnderRandomTrafficStaysBoundedWithOneEventPerTopic() {
        var random = SeededRandom.forTest("conflate")
        let table = VariantTable(encoders: [])
        var queue = OutboundQueue(maxMessages: 8, maxBytes: 400, policy: .conflate)
        var newest: [String: Int64] = [:]
        for n in 0..<5_000 {
            let topic = "t\(random.next(upperBound: UInt64(12)))"
            let size = 1 + Int(random.next(upperBound: UInt64(60)))
            _ = queue.offer(ByteBuffer(repeating: 0, count: size), event: PreparedEvent(event: Event(topic: topic, type: "t", data: .int(Int64(n))), table: table), writable: false)
            newest[topic] = Int64(n)
            #expect(queue.count <= 8 && queue.queuedBytes <= 400)
            if random.next(upperBound: UInt64(5)) == 0 {
                // Drain a little: what leaves is, for its topic, the newest offered so far.
                if let entry = queue.next(), let event = entry.event?.event {
                    #expect(event.data == .int(newest[event.topic] ?? -1))
                }
            }
        }
    }

    @Test func disconnectPolicyReportsOverflow() {
        var queue = OutboundQueue(maxMessages: 1, maxBytes: 100, policy: .disconnect)
        #expect(queue.offer(frame(10), writable: false) == .queued)
        #expect(queue.offer(frame(10), writable: false) == .overflow)
    }
}

@Suite struct BackoffTests {
    @Test func growsExponentiallyWithJitterAndCaps() {
        var backoff = Backoff(base: .milliseconds(100), maximum: .seconds(1))
        #expect(backoff.nextDelay(random: 1) == .milliseconds(100))
        #expect(backoff.nextDelay(random: 0) == .milliseconds(100))  // 200 * [0.5, 1]
        #expect(backoff.nextDelay(random: 1) == .milliseconds(400))
        #expect(backoff.nextDelay(random: 1) == .milliseconds(800))
        #expect(backoff.nextDelay(random: 1) == .seconds(1))
        #expect(backoff.nextDelay(random: 0.5) == .milliseconds(750))
        backoff.reset()
        #expect(backoff.nextDelay(random: 1) == .milliseconds(100))
    }
}
