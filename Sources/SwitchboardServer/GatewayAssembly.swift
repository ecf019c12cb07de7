import NIOConcurrencyHelpers
import Logging
import NIOCore
import Synchronization
import SwitchboardConfig
import SwitchboardCore
import SwitchboardKernel

/// Everything the server needs, built once from a validated configuration: the kernel,
/// one pipeline per endpoint, the built sources and the routes they registered.
public struct GatewayAssembly: Sendable {
    public let kernel: Kernel
    public let pipelines: [EndpointPipeline]
    public let sources: [(name: String, source: any EventSource)]
    /// The HTTP routes each source registered (webhooks), by source name.
    public let sourceRoutes: [String: [HTTPRoute]]
    /// Every source's routes.
    public var routes: [HTTPRoute] { sourceRoutes.keys.sorted().flatMap { sourceRoutes[$0] ?? [] } }
    public let supervisor: SourceSupervisor
    /// Set by the server so timers can publish the gateway's stats.
    public let statsProvider: StatsProviderBox
    /// Builds sources for this kernel (at start and on reload).
    public let sourceFactory: SourceFactory

    /// Builds encoders, filters and sources. Throws when a plugin's `build` refuses.
    public static func assemble(
        configuration: GatewayConfiguration,
        registry: PluginRegistry,
        eventLoopGroup: any EventLoopGroup,
        logger: Logger,
        forward: (@Sendable (Event, Bool) -> Bool)? = nil
    ) async throws -> GatewayAssembly {
        // One encoder per wire form: `json` and, for endpoints with `envelope: {topic: false}`,
        // the topic-less `json` are two variants.
        var encoders: [any EventEncoder] = []
        for endpoint in configuration.endpoints {
            for name in endpoint.encoders {
                guard let factory = registry.encoders[name] else { throw AssemblyError("unknown encoder '\(name)'") }
                let base = factory.make()
                guard let encoder = endpoint.envelope.topic ? base : base.omittingTopic() else {
                    throw AssemblyError("encoder '\(name)' cannot leave the topic out of its envelope")
                }
                if !encoders.contains(where: { $0.variantKey == encoder.variantKey }) { encoders.append(encoder) }
            }
        }
        let profiles = configuration.endpoints.compactMap { endpoint -> CompressionProfile? in
            guard endpoint.compression.mode != .off else { return nil }
            return Self.profile(endpoint.compression)
        }
        let variants = VariantTable(encoders: encoders, compressionProfiles: profiles)
        let history = configuration.endpoints.compactMap { endpoint -> HistoryRule? in
            guard let history = endpoint.history, endpoint.mode == .pubsub else { return nil }
            return HistoryRule(patterns: history.topics ?? endpoint.topics, size: history.size, ttlNanoseconds: history.ttl.nanoseconds)
        }
        let kernel = Kernel(
            eventLoopGroup: eventLoopGroup, variants: variants,
            flushInterval: .nanoseconds(configuration.flushInterval.nanoseconds),
            history: history,
            // With a cluster, Redis numbers and keeps history so any instance can resume.
            sharedHistory: configuration.cluster != nil && !history.isEmpty
        )

        var pipelines: [EndpointPipeline] = []
        for endpoint in configuration.endpoints {
            pipelines.append(try await makePipeline(endpoint, variants: variants, shutdownGrace: configuration.shutdownGrace, logger: logger))
        }

        let supervisor = SourceSupervisor(logger: logger)
        let statsProvider = StatsProviderBox()
        let builder = SourceFactory(kernel: kernel, supervisor: supervisor, statsProvider: statsProvider, forward: forward, logger: logger)
        var sources: [(name: String, source: any EventSource)] = []
        var routes: [String: [HTTPRoute]] = [:]
        for source in configuration.sources {
            let built = try await builder.build(source)
            sources.append((source.name, built.source))
            routes[source.name] = built.routes
        }
        let conflicts = configuration.routeConflicts(routes)
        guard conflicts.isEmpty else { throw AssemblyError(conflicts.joined(separator: "; ")) }
        return GatewayAssembly(
            kernel: kernel,
            pipelines: pipelines,
            sources: sources,
            sourceRoutes: routes,
            supervisor: supervisor,
            statsProvider: statsProvider,
            sourceFactory: builder
        )
    }
}

extension GatewayAssembly {
    /// Builds one endpoint's pipeline: its filters, and its encoders resolved to the
    /// kernel's variants (at start and when a reload adds or changes the endpoint).
    public static func makePipeline(
        _ endpoint: EndpointConfiguration, variants: VariantTable, shutdownGrace: ConfigDuration, logger: Logger
    ) async throws -> EndpointPipeline {
        var filters: [any Filter] = []
        var denials: [FilterDenials] = []
        for filter in endpoint.filters {
            var filterLogger = logger
            filterLogger[metadataKey: "filter"] = .string(filter.plugin)
            let record = FilterDenials(filter: filter.plugin, endpoint: endpoint.path, logger: filterLogger)
            denials.append(record)
            filters.append(try await filter.builder.build(FilterContext(endpointPath: endpoint.path, logger: filterLogger, denials: record)))
        }
        let choices = endpoint.encoders.compactMap { name -> EndpointPipeline.EncoderChoice? in
            let key = EncoderVariant.key(name: name, includesTopic: endpoint.envelope.topic)
            guard let variant = variants.variant(forEncoder: key) else { return nil }
            return .init(encoder: variants.entries[variant.index].encoder, variant: variant)
        }
        return EndpointPipeline(
            path: endpoint.path,
            encoders: choices,
            topics: endpoint.topics,
            defaultSubscriptions: endpoint.subscribe,
            filters: filters,
            filterDenials: denials,
            heartbeatInterval: endpoint.heartbeat.interval.duration,
            heartbeatTimeout: endpoint.heartbeat.timeout.duration,
            maxMessageSize: endpoint.maxMessageSize.bytes,
            maxSubscriptions: endpoint.maxSubscriptions,
            maxTopicLength: endpoint.maxTopicLength,
            maxMessageDepth: endpoint.maxMessageDepth,
            maxMessageRate: endpoint.maxMessageRate > 0 ? Double(endpoint.maxMessageRate) : nil,
            sendQueue: SendQueueLimits(maxMessages: endpoint.sendQueue.maxMessages, maxBytes: endpoint.sendQueue.maxBytes.bytes, policy: endpoint.sendQueue.policy),
            mode: endpoint.mode,
            closeTimeout: shutdownGrace.duration,
            compression: Self.compression(endpoint.compression),
            permissions: endpoint.permissions
        )
    }

    /// What a running kernel cannot take from `configuration` without a restart: the
    /// wire variants (encoder × compression profile), history rules and flush interval are
    /// fixed when the kernel is built. Empty when `configuration` fits this kernel.
    public func restartRequirements(for configuration: GatewayConfiguration, running: GatewayConfiguration) -> [String] {
        var problems: [String] = []
        for endpoint in configuration.endpoints {
            let keys = endpoint.encoders.map { EncoderVariant.key(name: $0, includesTopic: endpoint.envelope.topic) }
            for (name, key) in zip(endpoint.encoders, keys) where kernel.variants.variant(forEncoder: key) == nil {
                problems.append("endpoint \(endpoint.path): encoder '\(name)' (with this envelope) is new to this process")
            }
            if endpoint.compression.mode != .off {
                let profile = Self.profile(endpoint.compression)
                for (name, key) in zip(endpoint.encoders, keys)
                where kernel.variants.variant(forEncoder: key, profile: profile, windowBits: CompressionProfile.windowBits.first ?? 15) == nil {
                    problems.append("endpoint \(endpoint.path): compression level/mem_level/min_size of encoder '\(name)' are new to this process")
                }
            }
        }
        func rules(_ configuration: GatewayConfiguration) -> [String] {
            configuration.endpoints.compactMap { endpoint in
                guard let history = endpoint.history, endpoint.mode == .pubsub else { return nil }
                return "\((history.topics ?? endpoint.topics).map(\.text)) \(history.size) \(history.ttl.nanoseconds)"
            }.sorted()
        }
        if rules(configuration) != rules(running) { problems.append("history: the kept topics, sizes or ttls changed") }
        if configuration.flushInterval.nanoseconds != running.flushInterval.nanoseconds { problems.append("flush_interval changed") }
        return problems
    }

    static func profile(_ configuration: CompressionConfiguration) -> CompressionProfile {
        CompressionProfile(level: configuration.level, memLevel: configuration.memLevel, minSize: configuration.minSize.bytes)
    }

    static func compression(_ configuration: CompressionConfiguration) -> EndpointCompression? {
        let mode: PerMessageDeflate.Mode
        switch configuration.mode {
        case .off: return nil
        case .shared: mode = .shared
        case .dedicated: mode = .dedicated
        }
        return EndpointCompression(
            policy: PerMessageDeflate.Policy(mode: mode, serverWindowBits: configuration.windowBits, clientWindowBits: configuration.clientWindowBits),
            profile: profile(configuration),
            maxMemory: configuration.maxMemory.bytes
        )
    }
}

/// A plugin refused to build.
public struct AssemblyError: Error, CustomStringConvertible, Sendable {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// Holds the function that produces the gateway's stats (set once the server exists).
public final class StatsProviderBox: Sendable {
    /// A class around the function: a closure kept as the lock's value itself would gain a
    /// reabstraction thunk on every read (see ``LatencyObserver``), once per stats tick.
    private final class Provider: Sendable {
        let function: @Sendable () async -> JSONValue
        init(_ function: @escaping @Sendable () async -> JSONValue) { self.function = function }
    }
    private let provider = NIOLockedValueBox<Provider?>(nil)

    public init() {}

    public func set(_ function: @escaping @Sendable () async -> JSONValue) {
        let provider = Provider(function)
        self.provider.withLockedValue { $0 = provider }
    }

    public func snapshot() async -> JSONValue {
        guard let provider = provider.withLockedValue({ $0 }) else { return .object(JSONObject()) }
        return await provider.function()
    }
}

/// Builds sources against one kernel, with the routes each registers (at start and on
/// reload).
public struct SourceFactory: Sendable {
    let kernel: Kernel
    public let supervisor: SourceSupervisor
    let statsProvider: StatsProviderBox
    let forward: (@Sendable (Event, Bool) -> Bool)?
    let logger: Logger

    /// Builds `source`; with `register`, declares it to the supervisor first (as
    /// `starting`). A reload registers later, once the source it replaces has stopped.
    public func build(_ source: SourceConfiguration, register: Bool = true) async throws -> (source: any EventSource, routes: [HTTPRoute]) {
        var sourceLogger = logger
        sourceLogger[metadataKey: "source"] = .string(source.name)
        let routes = RouteCollector()
        let context = KernelSourceContext(
            sourceName: source.name,
            logger: sourceLogger,
            kernel: kernel,
            retain: source.retain,
            // Events every instance receives by itself are not forwarded (twice).
            forward: source.receivesOnEveryInstance && source.run == .everywhere ? nil : forward,
            routes: routes,
            supervisor: supervisor,
            statsProvider: statsProvider
        )
        if register { supervisor.register(name: source.name, plugin: source.plugin) }
        do {
            return (try await source.builder.build(context), routes.all)
        } catch {
            if register { supervisor.unregister(name: source.name) }
            throw AssemblyError("source '\(source.name)' (\(source.plugin)): \(error)")
        }
    }
}

final class RouteCollector: Sendable {
    private let routes = NIOLockedValueBox<[HTTPRoute]>([])
    func add(_ route: HTTPRoute) { routes.withLockedValue { $0.append(route) } }
    var all: [HTTPRoute] { routes.withLockedValue { $0 } }
}

/// The ``SourceContext`` the kernel hands to each source.
final class KernelSourceContext: SourceContext {
    let sourceName: String
    let logger: Logger
    private let kernel: Kernel
    private let retain: Bool
    /// Hands an event to the cluster bus; `true` when the bus also delivers it here (history
    /// topics travel through Redis, which numbers them, and come back to every instance).
    private let forward: (@Sendable (Event, Bool) -> Bool)?
    private let routes: RouteCollector
    private let supervisor: SourceSupervisor
    private let statsProvider: StatsProviderBox

    init(
        sourceName: String,
        logger: Logger,
        kernel: Kernel,
        retain: Bool,
        forward: (@Sendable (Event, Bool) -> Bool)?,
        routes: RouteCollector,
        supervisor: SourceSupervisor,
        statsProvider: StatsProviderBox
    ) {
        self.sourceName = sourceName
        self.logger = logger
        self.kernel = kernel
        self.retain = retain
        self.forward = forward
        self.routes = routes
        self.supervisor = supervisor
        self.statsProvider = statsProvider
    }

    func emit(_ event: Event) {
        if let forward, forward(event, retain) { return }
        kernel.publish(event, retain: retain)
    }
    func registerRoute(_ route: HTTPRoute) { routes.add(route) }
    func statsSnapshot() async -> JSONValue { await statsProvider.snapshot() }
    func reportHealth(_ health: SourceHealth) { supervisor.update(name: sourceName, health: health) }
}
