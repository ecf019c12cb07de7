import SwitchboardCore
import SwitchboardKernel

/// What an endpoint's filters decided about a request (a WebSocket upgrade or an SSE GET).
enum FilterChainDecision: Sendable {
    /// Admitted, with the principal the filters established and the guards they attached
    /// (each to be told `connectionClosed()` exactly once).
    case admit(Principal?, [any ConnectionGuard])
    case refuse(status: Int, reason: String, retryAfter: Int?)
}

extension EndpointPipeline {
    /// Runs every filter's `admit` in order, then, once all agreed, lets each `attach`
    /// per-connection resources. A refusal after some guards attached releases them.
    /// `recheck`: the request is an open connection's, run again by a reload
    /// (``Filter/recheck(_:principal:)`` instead of `admit`).
    func runFilters(_ request: UpgradeRequest, recheck: Bool = false) async -> FilterChainDecision {
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
