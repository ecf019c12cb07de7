import Logging
import Synchronization
import SwitchboardConfig
import SwitchboardKernel

/// An endpoint's pipeline plus its live counters.
/// Public so that tests can build a connection handler around a pipeline.
public final class EndpointRuntime: Sendable {
    public let pipeline: EndpointPipeline
    /// Open connections.
    public let connections = Atomic<Int>(0)
    /// Connections accepted since start.
    let accepted = Atomic<Int>(0)
    /// Upgrade requests refused (bad format, filters) since start.
    let rejected = Atomic<Int>(0)
    /// Subscriptions refused by topic permissions.
    let forbiddenSubscriptions = Atomic<Int>(0)
    /// Connections closed for protocol violations, size limits, dead peers or overflow.
    let closedForCause = Atomic<Int>(0)
    /// Refusals by kind (oversized, protocol errors, rate, slow consumers, …).
    public let refusals: RefusalCounters

    /// How clients may connect (`transports:`).
    public let transports: Set<Transport>

    public init(pipeline: EndpointPipeline, transports: Set<Transport> = [.websocket], logger: Logger = Logger(label: "switchboard")) {
        self.pipeline = pipeline
        self.transports = transports
        self.refusals = RefusalCounters(scope: pipeline.path, logger: logger)
    }
}
