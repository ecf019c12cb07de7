import NIOCore

/// Where a ``WheelTimed`` client sits in its loop's ``TimerWheel`` (8 bytes in the client).
public struct WheelSlot: Sendable, Equatable {
    var bucket: Int32
    var index: Int32
    /// Not in the wheel.
    public static let none = WheelSlot(bucket: -1, index: -1)
}

/// Something with one coarse deadline at a time (a connection's next heartbeat).
public protocol WheelTimed: AnyObject {
    /// Kept by the wheel; start with `.none`.
    var wheelSlot: WheelSlot { get set }
    /// The deadline passed (at most one resolution late, or early for deadlines beyond the
    /// wheel's span: check the time and schedule again).
    func wheelDeadlinePassed()
}

/// One timer per event loop for many clients: buckets of `resolution` (100 ms) over a
/// span of 1,024 buckets, advanced by one repeating task that runs only while some client
/// waits. A connection's heartbeat then costs an entry in an array — no scheduled task, no
/// promise and no closure per connection — and scheduling or cancelling is O(1).
/// Use on the loop only.
public final class TimerWheel {
    /// Bucket width in nanoseconds.
    public static let resolution: Int64 = 100_000_000
    static let bucketCount = 1024

    let eventLoop: any EventLoop
    private var buckets: [[any WheelTimed]]
    /// The bucket that fires next, and when.
    private var cursor = 0
    private var cursorTime: Int64 = 0
    private var ticking: RepeatedTask?
    /// Clients waiting.
    public private(set) var count = 0

    public init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
        buckets = Array(repeating: [], count: Self.bucketCount)
    }

    /// The loop's clock (an embedded loop's virtual time in tests).
    private var now: Int64 { Int64(eventLoop.now.uptimeNanoseconds) }

    /// Calls `client.wheelDeadlinePassed()` once `deadline` (uptime nanoseconds) passed;
    /// replaces the client's earlier deadline.
    public func schedule(_ client: any WheelTimed, at deadline: Int64) {
        cancel(client)
        if ticking == nil { startTicking() }
        let ahead = deadline <= cursorTime ? 0 : (deadline - cursorTime + Self.resolution - 1) / Self.resolution
        let bucket = (cursor + Int(min(ahead, Int64(Self.bucketCount - 1)))) % Self.bucketCount
        client.wheelSlot = WheelSlot(bucket: Int32(bucket), index: Int32(buckets[bucket].count))
        buckets[bucket].append(client)
        count += 1
    }

    /// Takes the client out of the wheel (nothing happens when it is not in it).
    public func cancel(_ client: any WheelTimed) {
        let slot = client.wheelSlot
        let bucket = Int(slot.bucket)
        let index = Int(slot.index)
        guard buckets.indices.contains(bucket), buckets[bucket].indices.contains(index), buckets[bucket][index] === client else { return }
        let last = buckets[bucket].removeLast()
        if index < buckets[bucket].count {
            buckets[bucket][index] = last
            last.wheelSlot = WheelSlot(bucket: Int32(bucket), index: Int32(index))
        }
        client.wheelSlot = .none
        count -= 1
        if count == 0 { stopTicking() }
    }

    private func startTicking() {
        cursorTime = now + Self.resolution
        let wheel = NIOLoopBound(self, eventLoop: eventLoop)
        let every = TimeAmount.nanoseconds(Self.resolution)
        ticking = eventLoop.scheduleRepeatedTask(initialDelay: every, delay: every) { _ in wheel.value.advance() }
    }

    private func stopTicking() {
        ticking?.cancel()
        ticking = nil
    }

    /// Fires every bucket whose time came. The cursor moves first, so a client that
    /// schedules again from its callback lands in a later bucket, never in the one firing.
    private func advance() {
        let now = self.now
        while cursorTime <= now, ticking != nil {
            let firing = cursor
            cursor = (cursor + 1) % Self.bucketCount
            cursorTime += Self.resolution
            guard !buckets[firing].isEmpty else { continue }
            var due: [any WheelTimed] = []
            swap(&due, &buckets[firing])
            // Out of the wheel before any callback runs: a callback may cancel another
            // client of this bucket (closing a connection), which is then a no-op.
            for client in due { client.wheelSlot = .none }
            count -= due.count
            for client in due { client.wheelDeadlinePassed() }
            // Keep the bucket's capacity for the next round.
            due.removeAll(keepingCapacity: true)
            if buckets[firing].isEmpty { swap(&due, &buckets[firing]) }
        }
        if count == 0 { stopTicking() }
    }
}
