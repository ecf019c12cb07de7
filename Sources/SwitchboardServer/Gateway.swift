import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
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
    let drain = DrainState()
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
    private func waitForWebSocketClients(hurried: Bool) async {
        let limit = ContinuousClock.now + (hurried ? .milliseconds(500) : configuration.shutdownGrace.duration + .seconds(1))
        while endpoints.all.values.contains(where: { $0.connections.load(ordering: .relaxed) > 0 }), ContinuousClock.now < limit {
            try? await Task.sleep(for: .milliseconds(10))
        }
    }

    /// Shuts a running gateway down as SIGTERM does: stops accepting (the listening socket
    /// closes, and upgrades already under way get 503), closes WebSocket clients with 1001
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
        await waitForWebSocketClients(hurried: drain.isHurried)
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
            buffer.writeString(metricsText())
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

    /// `/metrics` in the Prometheus text format.
    func metricsText() -> String {
        var lines: [String] = []
        func metric(_ name: String, _ type: String, _ help: String, _ samples: [(labels: String, value: Int)]) {
            lines.append("# HELP switchboard_\(name) \(help)")
            lines.append("# TYPE switchboard_\(name) \(type)")
            for sample in samples {
                lines.append("switchboard_\(name)\(sample.labels.isEmpty ? "" : "{\(sample.labels)}") \(sample.value)")
            }
        }
        func label(_ text: String) -> String {
            text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"").replacingOccurrences(of: "\n", with: "\\n")
        }
        let counters = assembly.kernel.counters
        let table = endpoints.all
        let runtimes = table.keys.sorted().compactMap { path in table[path].map { (path, $0) } }
        metric("connections", "gauge", "Open WebSocket connections.", runtimes.map { ("endpoint=\"\(label($0.0))\"", $0.1.connections.load(ordering: .relaxed)) })
        metric("connections_accepted_total", "counter", "WebSocket upgrades accepted.", runtimes.map { ("endpoint=\"\(label($0.0))\"", $0.1.accepted.load(ordering: .relaxed)) })
        metric("connections_rejected_total", "counter", "WebSocket upgrades refused.", runtimes.map { ("endpoint=\"\(label($0.0))\"", $0.1.rejected.load(ordering: .relaxed)) })
        metric("connections_closed_for_cause_total", "counter", "Connections closed for protocol violations, limits, dead peers or overflow.", runtimes.map { ("endpoint=\"\(label($0.0))\"", $0.1.closedForCause.load(ordering: .relaxed)) })
        var denials: [(String, Int)] = []
        for (path, runtime) in runtimes {
            for record in runtime.pipeline.filterDenials {
                for entry in record.counts where entry.denied > 0 {
                    denials.append(("endpoint=\"\(label(path))\",filter=\"\(label(record.filter))\",reason=\"\(label(entry.reason))\"", entry.denied))
                }
            }
        }
        metric("filter_denials_total", "counter", "Upgrades and messages refused by filters, per reason.", denials)
        var refusals: [(String, Int)] = listenerRefusals.snapshot.filter { $0.count > 0 }.map { ("scope=\"listener\",reason=\"\($0.name)\"", $0.count) }
        for (path, runtime) in runtimes {
            for entry in runtime.refusals.snapshot where entry.count > 0 {
                refusals.append(("scope=\"\(label(path))\",reason=\"\(entry.name)\"", entry.count))
            }
        }
        metric("refusals_total", "counter", "Connections, requests and messages refused by a limit or for a protocol violation, per reason.", refusals)
        metric("open_sockets", "gauge", "Open client sockets (HTTP and WebSocket) against listener.max_connections.", [("", connectionLimiter.openConnections)])
        metric("events_in_total", "counter", "Events published into the kernel.", [("", counters.eventsIn.load(ordering: .relaxed))])
        metric("deliveries_total", "counter", "Event frames queued to connections.", [("", counters.deliveries.load(ordering: .relaxed))])
        metric("dropped_total", "counter", "Frames dropped by slow-consumer policies.", [("", counters.dropped.load(ordering: .relaxed))])
        metric("history_replayed_total", "counter", "Events replayed from history (since, last, retained).", [("", counters.replayed.load(ordering: .relaxed))])
        metric("history_topics_refused_total", "counter", "Events of new topics not kept because the history table was full.", [("", counters.historyTopicsRefused.load(ordering: .relaxed))])
        metric("flush_rounds_total", "counter", "Flush rounds run by the event loops.", [("", counters.flushRounds.load(ordering: .relaxed))])
        metric("connection_writes_total", "counter", "Socket writes of gathered frames (deliveries / writes = frames per write).", [("", counters.connectionWrites.load(ordering: .relaxed))])
        metric("encodes_total", "counter", "Encoder calls on the broadcast path.", [("", counters.encodes.load(ordering: .relaxed))])
        metric("compressions_total", "counter", "Shared permessage-deflate compressions.", [("", counters.compressions.load(ordering: .relaxed))])
        let statuses = assembly.supervisor.statuses()
        metric("source_up", "gauge", "1 when the source is connected.", statuses.map {
            ("source=\"\(label($0.name))\",plugin=\"\(label($0.plugin))\",state=\"\($0.health.label)\"", $0.health == .connected ? 1 : 0)
        })
        metric("source_restarts_total", "counter", "Times a source was restarted after failing.", statuses.map { ("source=\"\(label($0.name))\"", $0.restarts) })
        metric("ready", "gauge", "1 when every source is connected.", [("", assembly.supervisor.isReady ? 1 : 0)])
        return lines.joined(separator: "\n") + "\n"
    }

    /// One endpoint's counters (in `/stats` and at its `stats_path`).
    static func endpointStats(_ runtime: EndpointRuntime) -> JSONValue {
        let open = Int64(runtime.connections.load(ordering: .relaxed))
        return [
            "connections": .int(open),
            "connected_clients": .int(open),
            "accepted": .int(Int64(runtime.accepted.load(ordering: .relaxed))),
            "rejected": .int(Int64(runtime.rejected.load(ordering: .relaxed))),
            "closed_for_cause": .int(Int64(runtime.closedForCause.load(ordering: .relaxed))),
            "forbidden_subscriptions": .int(Int64(runtime.forbiddenSubscriptions.load(ordering: .relaxed))),
            "refusals": Self.refusalsJSON(runtime.refusals),
            "filters": .array(runtime.pipeline.filterDenials.map { $0.snapshot() }),
        ]
    }

    static func refusalsJSON(_ counters: RefusalCounters) -> JSONValue {
        .object(JSONObject(counters.snapshot.map { ($0.name, .int(Int64($0.count))) }))
    }

    /// What `/stats` returns (and what a `timer` with `emit: stats` publishes). Subscribed
    /// topic names belong to clients: only a `detailed` snapshot (admin key) lists them;
    /// everyone else sees counts.
    public func statsSnapshot(detailed: Bool = false) async -> JSONValue {
        let counters = assembly.kernel.counters
        var perEndpoint = JSONObject()
        var totalConnections = 0
        let table = endpoints.all
        for path in table.keys.sorted() {
            guard let runtime = table[path] else { continue }
            let open = runtime.connections.load(ordering: .relaxed)
            totalConnections += open
            perEndpoint[path] = Self.endpointStats(runtime)
        }
        var topics = JSONObject()
        let counts = await assembly.kernel.subscriberCounts()
        if detailed {
            for (pattern, count) in counts.sorted(by: { $0.key < $1.key }) {
                topics.entries.append((pattern, .int(Int64(count))))
            }
        }
        return [
            "uptime_seconds": .int((UnixTime.nowMilliseconds() - started) / 1000),
            "connections": [
                "total": .int(Int64(totalConnections)),
                "per_endpoint": .object(perEndpoint),
            ],
            "subscriptions": ["total": .int(Int64(counts.values.reduce(0, +))), "patterns": .int(Int64(counts.count))],
            "subscribers": detailed ? .object(topics) : .null,
            "refusals": ["listener": Self.refusalsJSON(listenerRefusals), "open_sockets": .int(Int64(connectionLimiter.openConnections)), "max_connections": .int(Int64(connectionLimiter.maxConnections))],
            "events_in": .int(Int64(counters.eventsIn.load(ordering: .relaxed))),
            "deliveries_out": .int(Int64(counters.deliveries.load(ordering: .relaxed))),
            "encodes": .int(Int64(counters.encodes.load(ordering: .relaxed))),
            "compressions": .int(Int64(counters.compressions.load(ordering: .relaxed))),
            "frame_builds": .int(Int64(counters.frameBuilds.load(ordering: .relaxed))),
            "dedicated_compression_memory_bytes": .int(Int64(counters.dedicatedCompressionMemory.load(ordering: .relaxed))),
            "dropped": .int(Int64(counters.dropped.load(ordering: .relaxed))),
            "history_replayed": .int(Int64(counters.replayed.load(ordering: .relaxed))),
            "history_topics_refused": .int(Int64(counters.historyTopicsRefused.load(ordering: .relaxed))),
            "flush_rounds": .int(Int64(counters.flushRounds.load(ordering: .relaxed))),
            "connection_writes": .int(Int64(counters.connectionWrites.load(ordering: .relaxed))),
            "sources": .array(assembly.supervisor.statuses().map(Self.sourceJSON)),
            "cluster": bus?.stats ?? .null,
            "reloads": [
                "applied": .int(Int64(reloads.applied.load(ordering: .relaxed))),
                "rejected": .int(Int64(reloads.rejected.load(ordering: .relaxed))),
                "last_applied_ms": .int(reloads.lastAppliedAt.load(ordering: .relaxed)),
            ],
        ]
    }
}
