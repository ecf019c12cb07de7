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
    private let boundPort = NIOLockedValueBox<Int?>(nil)
    private let serviceGroup = NIOLockedValueBox<ServiceGroup?>(nil)
    private let drainTask = NIOLockedValueBox<Task<Void, Never>?>(nil)

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
        return LeasedSource(name: name, inner: source, bus: bus) { supervisor.update(name: name, health: $0) }
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
        assembly.kernel.counters.publishToWrite.withLockedValue { $0 = { histogram.record(.nanoseconds($0)) } }
        self.live = NIOLockedValueBox(LiveState(configuration: configuration, sourceRoutes: assembly.sourceRoutes, adminKey: Self.adminKey(configuration)))
    }

    static func adminKey(_ configuration: GatewayConfiguration) -> String? {
        (configuration.adminKey ?? ProcessInfo.processInfo.environment["SWITCHBOARD_ADMIN_KEY"]).flatMap { $0.isEmpty ? nil : $0 }
    }

    /// The port actually bound (useful with port 0), once the server runs.
    public var port: Int? { boundPort.withLockedValue { $0 } }

    /// Runs until SIGINT/SIGTERM (when `handleSignals`) or ``shutdown()``: stops accepting,
    /// closes WebSocket clients with 1001 spread over `shutdown.drain`, stops sources, then
    /// returns. SIGHUP reloads the configuration.
    public func run(handleSignals: Bool = true, onRunning: (@Sendable (Int) async -> Void)? = nil) async throws {
        assembly.statsProvider.set { [self] in await self.statsSnapshot() }
        let router = Router(context: GatewayRequestContext.self)
        addRoutes(to: router)

        let endpoints = self.endpoints
        let kernel = assembly.kernel
        let logger = self.logger
        let listenerConfiguration = configuration.listener
        let limits = GatewayChildChannel.ListenerLimits(
            connections: connectionLimiter,
            handshakeTimeout: TimeAmount(listenerConfiguration.handshakeTimeout.duration),
            idleTimeout: listenerConfiguration.idleTimeout,
            maxHeaderSize: listenerConfiguration.maxHeaderSize.bytes,
            refusals: listenerRefusals
        )
        let tls = self.tls
        let server = HTTPServerBuilder { responder in
            GatewayChildChannel(responder: responder, endpoints: endpoints, kernel: kernel, limits: limits, tls: tls, logger: logger)
        }
        let listener = listenerConfiguration
        let application = Application(
            responder: GatewayResponder(fixed: router.buildResponder(), gateway: self),
            server: server,
            // The kernel caps the backlog at net.core.somaxconn; Hummingbird's 256 overflowed
            // under reconnect bursts (clients then wait for SYN retries).
            configuration: .init(address: .hostname(listener.host, port: listener.port), serverName: nil, backlog: 4096),
            onServerRunning: { [self] channel in
                let port = channel.localAddress?.port ?? listener.port
                self.boundPort.withLockedValue { $0 = port }
                self.residentAtStart.store(Self.residentMemoryBytes() ?? 0, ordering: .relaxed)
                let displayHost = listener.host == "0.0.0.0" || listener.host == "::" ? "localhost" : listener.host
                let scheme = tls == nil ? "" : "s"
                let base = "http\(scheme)://\(displayHost):\(port)"
                logger.info("switchboard listening", metadata: [
                    "address": .string("\(listener.host):\(port)"),
                    "endpoints": .string(endpoints.all.keys.sorted().map { "ws\(scheme)://\(displayHost):\(port)\($0)" }.joined(separator: " ")),
                ])
                let (routes, dashboard) = self.live.withLockedValue { ($0.sourceRoutes.values.flatMap { $0 }, $0.configuration.dashboard) }
                if dashboard.enabled { logger.notice("dashboard: \(base)\(dashboard.path)") }
                for route in routes {
                    if let announcement = route.announcement?(base) {
                        for line in announcement.split(separator: "\n") { logger.notice("\(line)") }
                    }
                }
                await onRunning?(port)
            },
            eventLoopGroupProvider: .shared(eventLoopGroup),
            logger: logger
        )
        // Sources run outside the service group: they stop last, after the drain, while the
        // HTTP server stops first (its end does not wait for WebSocket connections).
        for (name, source) in initialSources { sourceRunner.start(name: name, source: source) }
        let group = ServiceGroup(configuration: .init(services: [.init(service: application)], logger: logger))
        serviceGroup.withLockedValue { $0 = group }
        // `shutdown()` may have run before the group existed: the group remembers the request.
        if drain.hasStarted { await group.triggerGracefulShutdown() }
        let limiter = connectionLimiter
        let trimmer = MemoryTrimmer(on: eventLoopGroup.next()) { limiter.openConnections }
        defer { trimmer.cancel() }
        let signals = handleSignals ? Task { await self.handleSignals() } : nil
        defer { signals?.cancel() }
        var failure: (any Error)?
        do { try await group.run() } catch { failure = error }
        // Also when the server ended on its own: its clients are closed before the sources.
        await shutdown()
        await sourceRunner.stopAll()
        logger.info("switchboard stopped")
        if let failure { throw failure }
    }

    /// SIGTERM and SIGINT drain (a second one ends at once); SIGHUP reloads.
    private func handleSignals() async {
        let signals = await UnixSignalsSequence(trapping: .sigterm, .sigint, .sighup)
        for await signal in signals {
            switch signal {
            case .sighup:
                Task { _ = await self.reload(trigger: "SIGHUP") }
            default:
                if drain.start() {
                    Task { await self.shutdown() }
                } else {
                    logger.notice("second signal: closing every connection now", metadata: ["signal": "\(signal)"])
                    drain.hurry()
                }
            }
        }
    }

    /// WebSocket connections are not tasks of the HTTP server, so its end does not wait for
    /// them: wait here until the closed clients have answered the 1001 close (or the close
    /// timeout has closed them), at most `shutdown.grace` plus a second.
    /// A second signal during the wait shortens it to half a second from then.
    private func waitForWebSocketClients() async {
        let start = ContinuousClock.now
        let patient = start + configuration.shutdownGrace.duration + .seconds(1)
        var hurriedLimit: ContinuousClock.Instant? = drain.isHurried ? start + .milliseconds(500) : nil
        while endpoints.all.values.contains(where: { $0.connections.load(ordering: .relaxed) > 0 }) {
            let now = ContinuousClock.now
            if hurriedLimit == nil && drain.isHurried { hurriedLimit = now + .milliseconds(500) }
            if now >= min(patient, hurriedLimit ?? patient) { return }
            try? await Task.sleep(for: .milliseconds(10))
        }
    }

    /// Shuts a running gateway down as SIGTERM does: stops accepting (the listening socket
    /// closes, upgrade requests still arriving get 503, and a connection whose filters finish
    /// after the drain began is closed with 1001 at once), closes WebSocket clients with 1001
    /// spread over `shutdown.drain` while deliveries continue to the rest, and waits for
    /// them; ``run(handleSignals:onRunning:)`` then stops the sources and returns. Every
    /// caller waits for the same drain.
    public func shutdown() async {
        let task = drainTask.withLockedValue { task in
            if task == nil { task = Task { await self.drainClients() } }
            return task
        }
        await task?.value
    }

    private func drainClients() async {
        _ = drain.start()
        endpoints.draining.store(true, ordering: .relaxed)
        let group = serviceGroup.withLockedValue { $0 }
        await group?.triggerGracefulShutdown()
        let settings = configuration.shutdown
        let open = endpoints.all.values.flatMap { $0.open.all }
        logger.notice("draining", metadata: ["clients": "\(open.count)", "window": "\(settings.drain)"])
        await closePaced(open, over: settings.drain.duration, jitter: settings.reconnectJitter.duration, reason: "server shutting down")
        // Connections that were being accepted while the drain started.
        for runtime in endpoints.all.values { runtime.open.send(.close(code: 1001, reason: "server shutting down")) }
        await waitForWebSocketClients()
    }

    /// Closes `connections` with 1001 one after another, evenly over `window`, each reason
    /// carrying a random reconnect delay up to `jitter` (`; reconnect_after_ms=N`). A
    /// second shutdown signal (``DrainState/hurry()``) closes the rest at once.
    func closePaced(_ connections: [OpenConnection], over window: Duration, jitter: Duration, reason: String) async {
        let connections = connections.shuffled()
        guard !connections.isEmpty else { return }
        let start = ContinuousClock.now
        let jitterMilliseconds = max(0, Int(jitter.components.seconds * 1000 + jitter.components.attoseconds / 1_000_000_000_000_000))
        var next = 0
        while next < connections.count {
            let elapsed = ContinuousClock.now - start
            // Connections due by now: the i-th at window × i / n.
            var due = connections.count
            if !drain.isHurried && window > .zero {
                due = min(connections.count, Int((elapsed / window) * Double(connections.count)) + 1)
            }
            while next < due {
                let delay = Int.random(in: 0...jitterMilliseconds)
                connections[next].send(.close(code: 1001, reason: "\(reason); reconnect_after_ms=\(delay)"))
                next += 1
            }
            if next < connections.count { try? await Task.sleep(for: .milliseconds(5)) }
        }
    }

    // MARK: routes

    /// The routes that never change: probes, stats, metrics and the admin API. Endpoint
    /// paths, source routes and the dashboard follow the configuration in force
    /// (``GatewayResponder``).
    private func addRoutes(to router: Router<GatewayRequestContext>) {
        router.get("/healthz") { _, _ in
            Self.json(["status": "ok"], status: .ok)
        }
        router.get("/readyz") { [self] _, _ in
            let statuses = assembly.supervisor.statuses()
            let draining = drain.hasStarted
            let ready = assembly.supervisor.isReady && !draining
            return Self.json(
                [
                    "status": .string(draining ? "draining" : ready ? "ready" : "degraded"),
                    "sources": .array(statuses.map(Self.sourceJSON)),
                ],
                status: ready ? .ok : .serviceUnavailable
            )
        }
        router.get("/stats") { [self] request, _ in
            Self.json(await statsSnapshot(detailed: Self.hasAdminKey(request.headers, adminKey: live.withLockedValue { $0.adminKey })), status: .ok)
        }
        router.get("/metrics") { [self] _, _ in
            var buffer = ByteBuffer()
            buffer.writeString(await metricsText())
            return Response(
                status: .ok,
                headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: .init(byteBuffer: buffer)
            )
        }
        router.post("/admin/reload") { [self] request, _ in
            guard let adminKey = live.withLockedValue({ $0.adminKey }) else {
                return Self.json(["error": ["code": "admin_disabled", "message": "the admin API is off: set admin_key or SWITCHBOARD_ADMIN_KEY"]], status: .notFound)
            }
            guard Self.hasAdminKey(request.headers, adminKey: adminKey) else {
                return Self.json(["error": ["code": "forbidden", "message": "send the admin key as X-Admin-Key or Authorization: Bearer"]], status: .forbidden)
            }
            let outcome = await reload(trigger: "POST /admin/reload")
            return Self.json(outcome.json, status: outcome.applied ? .ok : .unprocessableContent)
        }
    }

    /// Whether the request carries the admin key (`X-Admin-Key` or `Authorization: Bearer`,
    /// compared in constant time).
    static func hasAdminKey(_ headers: HTTPFields, adminKey: String?) -> Bool {
        guard let adminKey else { return false }
        let lookup = HTTPRouteRequest(headers: headers.map { (name: $0.name.rawName, value: $0.value) }, query: [], body: ByteBuffer(), remoteAddress: nil)
        guard let offered = lookup.header("X-Admin-Key") ?? lookup.bearerToken else { return false }
        return ConstantTime.equal(Array(offered.utf8), Array(adminKey.utf8))
    }

    /// A plugin route's response as Hummingbird's.
    static func response(_ response: HTTPRouteResponse, extraHeaders: HTTPFields = [:]) -> Response {
        var headers = extraHeaders
        for header in response.headers {
            if let name = HTTPField.Name(header.name) { headers[name] = header.value }
        }
        return json(response.body, status: .init(code: response.status), extraHeaders: headers)
    }

    static func json(_ value: JSONValue, status: HTTPResponse.Status, extraHeaders: HTTPFields = [:]) -> Response {
        var buffer = ByteBuffer()
        JSONWriter.write(value, into: &buffer)
        buffer.writeStaticString("\n")
        var headers = extraHeaders
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: .init(byteBuffer: buffer))
    }

    static func sourceJSON(_ status: SourceStatus) -> JSONValue {
        var object = JSONObject([
            ("name", .string(status.name)),
            ("plugin", .string(status.plugin)),
            ("state", .string(status.health.label)),
            ("since_ms", .int(status.since)),
            ("restarts", .int(Int64(status.restarts))),
        ])
        switch status.health {
        case .retrying(let error), .failed(let error): object["last_error"] = .string(error)
        default: break
        }
        return .object(object)
    }

    // MARK: stats
}
