/// Exponential backoff with full jitter, for reconnecting sources.
///
/// Attempt *n* waits a random time in `[base·2ⁿ / 2, base·2ⁿ]`, capped at `maximum`, so a
/// fleet of gateways does not reconnect to a recovering backend in lockstep.
public struct Backoff: Sendable {
    public var base: Duration
    public var maximum: Duration
    public private(set) var attempt = 0

    public init(base: Duration = .milliseconds(250), maximum: Duration = .seconds(30)) {
        self.base = base
        self.maximum = maximum
    }

    /// The delay before the next attempt, given a random fraction in 0...1.
    public mutating func nextDelay(random fraction: Double = Double.random(in: 0...1)) -> Duration {
        let exponent = min(attempt, 20)
        attempt += 1
        let ceiling = min(base * (1 << exponent), maximum)
        let clamped = max(0, min(1, fraction))
        return ceiling / 2 + (ceiling / 2) * clamped
    }

    /// Starts over after a success.
    public mutating func reset() { attempt = 0 }
}
