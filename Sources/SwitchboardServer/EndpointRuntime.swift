import Synchronization
import SwitchboardKernel

/// An endpoint's pipeline plus its live counters.
final class EndpointRuntime: Sendable {
    let pipeline: EndpointPipeline
    /// Open connections.
    let connections = Atomic<Int>(0)
    /// Connections accepted since start.
    let accepted = Atomic<Int>(0)
    /// Upgrade requests refused (bad format, filters) since start.
    let rejected = Atomic<Int>(0)
    /// Subscriptions refused by topic permissions.
    let forbiddenSubscriptions = Atomic<Int>(0)
    /// Connections closed for protocol violations, size limits, dead peers or overflow.
    let closedForCause = Atomic<Int>(0)

    init(pipeline: EndpointPipeline) {
        self.pipeline = pipeline
    }
}
