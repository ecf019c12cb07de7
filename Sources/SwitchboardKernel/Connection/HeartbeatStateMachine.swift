/// Decides when to ping a WebSocket peer and when to give up on it.
///
/// A value type driven by plain nanosecond timestamps, so tests run it with a fake clock
/// and no sockets; the connection handler only executes the actions.
public struct HeartbeatStateMachine: Sendable {
    /// What the handler should do now.
    public enum Action: Sendable, Equatable {
        case none
        case sendPing
        case closeDeadPeer
    }

    public let interval: Int64
    public let timeout: Int64
    private var lastHeard: Int64
    private var pingSentAt: Int64?

    /// `interval` and `timeout` in nanoseconds; an interval of 0 disables heartbeats.
    public init(interval: Int64, timeout: Int64, now: Int64) {
        self.interval = interval
        self.timeout = timeout
        self.lastHeard = now
    }

    public var isEnabled: Bool { interval > 0 }

    /// Any frame from the peer proves it is alive. Returns whether it answered a ping: the
    /// next tick is then due `interval` from now, not at the ping's timeout.
    @discardableResult
    public mutating func heard(now: Int64) -> Bool {
        lastHeard = now
        defer { pingSentAt = nil }
        return pingSentAt != nil
    }

    /// Evaluates the timers; returns the action and when to call `tick` next.
    public mutating func tick(now: Int64) -> (action: Action, nextTick: Int64) {
        guard isEnabled else { return (.none, Int64.max) }
        if let sent = pingSentAt {
            if now - sent >= timeout { return (.closeDeadPeer, now) }
            return (.none, sent + timeout)
        }
        if now - lastHeard >= interval {
            pingSentAt = now
            return (.sendPing, now + timeout)
        }
        return (.none, lastHeard + interval)
    }
}
