import SwitchboardCore
import SwitchboardKernel

/// What an endpoint's filters decided about a request (a WebSocket upgrade or an SSE GET).
typealias FilterChainDecision = FilterChain.Decision

extension EndpointPipeline {
    /// Runs the endpoint's ``FilterChain`` on `request`.
    func runFilters(_ request: UpgradeRequest, recheck: Bool = false) async -> FilterChainDecision {
        await FilterChain(filters).run(request, recheck: recheck)
    }
}
