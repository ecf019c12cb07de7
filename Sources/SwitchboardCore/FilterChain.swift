/// An endpoint's filters in their YAML order, run as one decision on a request (a
/// WebSocket upgrade, an SSE GET, or an open connection's kept request on reload).
///
/// Every filter's `admit` runs in order, each seeing the principal the earlier ones
/// established; the first refusal ends the run. Once all agreed, each filter's `attach`
/// reserves per-connection resources; a refusal there releases the guards attached before
/// it, so nothing reserved leaks.
public struct FilterChain: Sendable {
    public let filters: [any Filter]

    public init(_ filters: [any Filter]) {
        self.filters = filters
    }

    /// What the chain decided.
    public enum Decision: Sendable {
        /// Admitted, with the principal the filters established and the guards they attached
        /// (each to be told `connectionClosed()` exactly once).
        case admit(Principal?, [any ConnectionGuard])
        case refuse(status: Int, reason: String, retryAfter: Int?)
    }

    /// Runs the chain on `request`. `recheck`: the request is an open connection's, run again
    /// by a reload (``Filter/recheck(_:principal:)`` instead of `admit`).
    public func run(_ request: UpgradeRequest, recheck: Bool = false) async -> Decision {
        var principal: Principal?
        for filter in filters {
            let decision = recheck ? await filter.recheck(request, principal: principal) : await filter.admit(request, principal: principal)
            switch decision {
            case .admit(let established): principal = established ?? principal
            case .deny(let status, let reason, let retryAfter): return .refuse(status: status, reason: reason, retryAfter: retryAfter)
            }
        }
        var guards: [any ConnectionGuard] = []
        for filter in filters {
            switch filter.attach(request, principal: principal) {
            case .none: continue
            case .guarded(let guardian): guards.append(guardian)
            case .deny(let status, let reason, let retryAfter):
                for guardian in guards { guardian.connectionClosed() }
                return .refuse(status: status, reason: reason, retryAfter: retryAfter)
            }
        }
        return .admit(principal, guards)
    }
}
