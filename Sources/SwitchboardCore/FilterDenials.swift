import NIOConcurrencyHelpers
import Logging
import Synchronization

/// One filter's denial record: counters per reason for `/stats`, and a log that writes at
/// most one line per second however many requests a flood sends (the lines in between
/// are counted in `suppressed_since_last`).
///
/// Reasons are short fixed texts chosen by the filter ("token expired", "origin not
/// allowed"); they never contain the credential that was presented.
public final class FilterDenials: Sendable {
    /// The filter's plugin name.
    public let filter: String
    /// The endpoint the filter guards.
    public let endpoint: String
    private let logger: Logger
    private let state = NIOLockedValueBox(State())

    private struct State {
        /// Reason → (denied, observed-only) counts, in first-seen order.
        var counts: [(reason: String, denied: Int, observed: Int)] = []
        var lastLog: ContinuousClock.Instant?
        var suppressed = 0
    }

    public init(filter: String, endpoint: String, logger: Logger) {
        self.filter = filter
        self.endpoint = endpoint
        self.logger = logger
    }

    /// Counts and (rate-limited) logs one denial. In `observe` mode it is counted as
    /// observed: the request went through.
    public func record(reason: String, remote: String?, mode: FilterMode) {
        let now = ContinuousClock.now
        let (shouldLog, suppressed): (Bool, Int) = state.withLockedValue { state in
            if let index = state.counts.firstIndex(where: { $0.reason == reason }) {
                if mode == .observe { state.counts[index].observed += 1 } else { state.counts[index].denied += 1 }
            } else if state.counts.count < 64 {
                state.counts.append((reason, mode == .observe ? 0 : 1, mode == .observe ? 1 : 0))
            }
            if let last = state.lastLog, now - last < .seconds(1) {
                state.suppressed += 1
                return (false, 0)
            }
            state.lastLog = now
            defer { state.suppressed = 0 }
            return (true, state.suppressed)
        }
        guard shouldLog else { return }
        logger.notice(mode == .observe ? "\(filter) would deny (observe mode)" : "\(filter) denied", metadata: [
            "endpoint": .string(endpoint),
            "remote": .string(remote ?? "-"),
            "reason": .string(reason),
            "suppressed_since_last": .stringConvertible(suppressed),
        ])
    }

    /// Applies the filter's mode to a refusal: records it, and turns it into an admission
    /// (keeping `principal`) when the filter only observes.
    public func apply(_ decision: FilterDecision, remote: String?, mode: FilterMode, principal: Principal?) -> FilterDecision {
        guard case .deny(_, let reason, _) = decision else { return decision }
        record(reason: reason, remote: remote, mode: mode)
        return mode == .observe ? .admit(principal) : decision
    }

    /// Counts per reason, in first-seen order.
    public var counts: [(reason: String, denied: Int, observed: Int)] {
        state.withLockedValue { $0.counts }
    }

    /// `{"filter","denied":{reason: n},"observed":{reason: n}}` for `/stats`.
    public func snapshot() -> JSONValue {
        var denied = JSONObject()
        var observed = JSONObject()
        for entry in counts {
            if entry.denied > 0 { denied.entries.append((entry.reason, .int(Int64(entry.denied)))) }
            if entry.observed > 0 { observed.entries.append((entry.reason, .int(Int64(entry.observed)))) }
        }
        return ["filter": .string(filter), "denied": .object(denied), "observed": .object(observed)]
    }

}
