import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Prometheus
import ServiceLifecycle
import UnixSignals
import HTTPTypes
import Synchronization
import SwitchboardCluster
import SwitchboardConfig
import SwitchboardCore
import SwitchboardKernel

/// The assembled gateway: kernel, endpoints, sources and the HTTP/WebSocket server on one
/// port.
///
/// ```swift
/// let gateway = try await Gateway.make(configuration: config, registry: registry, logger: logger)
/// try await gateway.run()   // until SIGINT/SIGTERM; SIGHUP reloads
/// ```
public final class Gateway: Sendable {
    /// The configuration the gateway started with.
    public let initialConfiguration: GatewayConfiguration
    public let assembly: GatewayAssembly
    /// The endpoints by path (a reload replaces the table).
    let endpoints: EndpointTable
    let logger: Logger
    let eventLoopGroup: any EventLoopGroup
    let started = UnixTime.nowMilliseconds()
    /// The cluster bus, when `cluster:` is configured.
    let bus: ClusterBus?
    /// What the supervisor runs first: the assembled sources (`run: once` ones behind their
    /// lease) and the cluster bus subscription.
    let initialSources: [(name: String, source: any EventSource)]
    let sourceRunner: SourceRunner
    /// Open sockets overall and per address, against the listener's limits.
    let connectionLimiter: ConnectionLimiter
    /// Refusals before any endpoint: connection limits, handshake timeouts, bad requests.
    let listenerRefusals: RefusalCounters
    /// What a reload may change, and the routes it installs.
    let live: NIOLockedValueBox<LiveState>
    /// Reads the configuration again (file, environment, command-line overrides) for a
    /// reload; nil when the gateway runs the built-in configuration.
    let reloadSource: (@Sendable () throws(ConfigurationError) -> GatewayConfiguration)?
    /// The certificate and key in use, read again on every reload.
    let tls: TLSContextBox?
    let reloads = ReloadCounters()
    /// Histograms (publish → write latency), kept for the gateway's lifetime.
    let observed = ObservedMetrics()
    let drain = DrainState()
    /// Resident memory once the listener is up and no client is connected: the baseline
    /// of the per-connection estimate in `/stats` and `/metrics`.
    let residentAtStart = Atomic<Int>(0)
    let boundPort = NIOLockedValueBox<Int?>(nil)
    let serviceGroup = NIOLockedValueBox<ServiceGroup?>(nil)
    let drainTask = NIOLockedValueBox<Task<Void, Never>?>(nil)

    /// The parts of the configuration in force that a reload replaces.
    struct LiveState: Sendable {
        var configuration: GatewayConfiguration
        /// Each source's HTTP routes (webhooks), by source name.
        var sourceRoutes: [String: [HTTPRoute]]
        /// The admin key in force (config, else `SWITCHBOARD_ADMIN_KEY`); nil = no admin API.
        var adminKey: String?
    }

    /// The configuration in force (the last one a reload applied).
    public var configuration: GatewayConfiguration { live.withLockedValue { $0.configuration } }

    /// Builds everything; nothing listens yet. `reload` reads the configuration again for
    /// SIGHUP and `POST /admin/reload`; without it a reload reports that there is nothing to
    /// read.
    public static func make(
        configuration: GatewayConfiguration,
        registry: PluginRegistry,
        logger: Logger,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        reload: (@Sendable () throws(ConfigurationError) -> GatewayConfiguration)? = nil
    ) async throws -> Gateway {
        // Sources are built before the bus exists (the bus needs the kernel), so their
        // forwarding goes through a box filled right after.
        let busBox = NIOLockedValueBox<ClusterBus?>(nil)
        var forward: (@Sendable (Event, Bool) -> Bool)?
        if configuration.cluster != nil {
            forward = { event, retain in
                guard let bus = busBox.withLockedValue({ $0 }) else { return false }
                return bus.route(event, retain: retain)
            }
        }
        let tls = try configuration.listener.tls.map { try TLSContextBox(configuration: $0) }
        let assembly = try await GatewayAssembly.assemble(
            configuration: configuration,
            registry: registry,
            eventLoopGroup: eventLoopGroup,
            logger: logger,
            forward: forward
        )
        var sources = assembly.sources
        var bus: ClusterBus?
        if let cluster = configuration.cluster {
            let created = ClusterBus(configuration: cluster, kernel: assembly.kernel, logger: logger)
            busBox.withLockedValue { $0 = created }
            if assembly.kernel.historyIsShared { assembly.kernel.sharedHistoryStore = created }
            bus = created
            sources = sources.map { entry in
                let run = configuration.sources.first(where: { $0.name == entry.name })?.run ?? .everywhere
                return (entry.name, Self.leased(entry.source, name: entry.name, run: run, bus: created, supervisor: assembly.supervisor))
            }
            let supervisor = assembly.supervisor
            supervisor.register(name: "cluster-bus", plugin: "cluster")
            sources.append(("cluster-bus", created.subscriber { supervisor.update(name: "cluster-bus", health: $0) }))
            created.connectPublisher()
        }
        return Gateway(
            configuration: configuration, assembly: assembly, bus: bus, sources: sources, logger: logger,
            eventLoopGroup: eventLoopGroup, reload: reload, tls: tls
        )
    }

    /// A `run: once` source runs behind its cluster lease.
    static func leased(_ source: any EventSource, name: String, run: SourceRunPolicy, bus: ClusterBus?, supervisor: SourceSupervisor) -> any EventSource {
        guard run == .once, let bus else { return source }
        return bus.leased(source, name: name) { supervisor.update(name: name, health: $0) }
    }

    private init(
        configuration: GatewayConfiguration,
        assembly: GatewayAssembly,
        bus: ClusterBus?,
        sources: [(name: String, source: any EventSource)],
        logger: Logger,
        eventLoopGroup: any EventLoopGroup,
        reload: (@Sendable () throws(ConfigurationError) -> GatewayConfiguration)?,
        tls: TLSContextBox?
    ) {
        self.initialConfiguration = configuration
        self.assembly = assembly
        self.bus = bus
        self.initialSources = sources
        self.sourceRunner = SourceRunner(supervisor: assembly.supervisor)
        self.logger = logger
        self.eventLoopGroup = eventLoopGroup
        self.reloadSource = reload
        self.tls = tls
        var endpoints: [String: EndpointRuntime] = [:]
        for pipeline in assembly.pipelines {
            let transports = configuration.endpoints.first { $0.path == pipeline.path }?.transports ?? [.websocket]
            let runtime = EndpointRuntime(pipeline: pipeline, transports: Set(transports), logger: logger)
            runtime.drainIsPaced.store(true, ordering: .relaxed)
            endpoints[pipeline.path] = runtime
        }
        self.endpoints = EndpointTable(endpoints)
        self.connectionLimiter = ConnectionLimiter(
            maxConnections: configuration.listener.maxConnections,
            maxConnectionsPerIP: configuration.listener.maxConnectionsPerIP
        )
        self.listenerRefusals = RefusalCounters(scope: "listener", logger: logger)
        let histogram = observed.publishToWrite
        let observer = LatencyObserver { histogram.record(.nanoseconds($0)) }
        assembly.kernel.counters.publishToWrite.withLockedValue { $0 = observer }
        self.live = NIOLockedValueBox(LiveState(configuration: configuration, sourceRoutes: assembly.sourceRoutes, adminKey: Self.adminKey(configuration)))
    }

    static func adminKey(_ configuration: GatewayConfiguration) -> String? {
        (configuration.adminKey ?? ProcessInfo.processInfo.environment["SWITCHBOARD_ADMIN_KEY"]).flatMap { $0.isEmpty ? nil : $0 }
    }

    /// The port actually bound (useful with port 0), once the server runs.
    public var port: Int? { boundPort.withLockedValue { $0 } }
}
