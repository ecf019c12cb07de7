import NIOCore
import SwitchboardConfig
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
        #expect(queue.next() == ByteBuffer(bytes: [3]))
        #expect(queue.next() == ByteBuffer(bytes: [4]))
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
