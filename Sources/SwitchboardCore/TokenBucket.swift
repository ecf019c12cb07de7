/// A token bucket driven by explicit nanosecond timestamps (tests use a fake clock).
public struct TokenBucket: Sendable, Equatable {
    public let rate: Double
    public let burst: Double
    private var tokens: Double
    private var updated: Int64

    /// `rate` tokens per second, at most `burst` saved up; starts full.
    public init(rate: Double, burst: Double, now: Int64) {
        self.rate = rate
        self.burst = max(1, burst)
        self.tokens = max(1, burst)
        self.updated = now
    }

    private mutating func refill(now: Int64) {
        guard now > updated else { return }
        tokens = min(burst, tokens + Double(now - updated) / 1e9 * rate)
        updated = now
    }

    /// Takes one token if there is one.
    public mutating func take(now: Int64) -> Bool {
        refill(now: now)
        guard tokens >= 1 else { return false }
        tokens -= 1
        return true
    }

    /// Whole seconds until a token is available (at least 1).
    public mutating func retryAfter(now: Int64) -> Int {
        refill(now: now)
        guard rate > 0 else { return 60 }
        return max(1, Int(((1 - tokens) / rate).rounded(.up)))
    }

    /// Whether the bucket is full again (the entry can be forgotten).
    public mutating func isIdle(now: Int64) -> Bool {
        refill(now: now)
        return tokens >= burst
    }
}
