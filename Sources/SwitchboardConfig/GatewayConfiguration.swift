import SwitchboardCore

/// The whole gateway as one validated value: where to listen, which sources run and which
/// endpoints clients connect to.
public struct GatewayConfiguration: Sendable {
    /// Paths the gateway answers itself, whatever the configuration: no endpoint, stats
    /// path or source route may take them (nor anything under `/admin/`).
    public static let builtInPaths: Set<String> = ["/healthz", "/readyz", "/stats", "/metrics"]

    /// Whether `path` is one of ``builtInPaths`` or under `/admin/`.
    public static func isBuiltInPath(_ path: String) -> Bool {
        builtInPaths.contains(path) || path.hasPrefix("/admin/")
    }

    /// Why source routes cannot be served beside this configuration's own paths: a
    /// built-in route, an endpoint or stats path, the dashboard's, or another source's
    /// route with the same method. Empty when they fit.
    public func routeConflicts(_ sourceRoutes: [String: [HTTPRoute]]) -> [String] {
        let routes = sourceRoutes.keys.sorted().flatMap { name in (sourceRoutes[name] ?? []).map { (source: name, method: $0.method, path: $0.path) } }
        var problems: [String] = []
        var taken: [String: String] = [:]
        for endpoint in endpoints {
            taken[endpoint.path] = "endpoint \(endpoint.path)"
            if let statsPath = endpoint.statsPath { taken[statsPath] = "the stats path of endpoint \(endpoint.path)" }
        }
        if dashboard.enabled {
            for path in [dashboard.path, "/client.js", "/endpoints.json"] { taken[path] = "the dashboard" }
        }
        var seen: [String: String] = [:]
        for route in routes {
            if Self.isBuiltInPath(route.path) {
                problems.append("source '\(route.source)': route \(route.method) \(route.path) is taken by a built-in route")
            } else if let owner = taken[route.path] {
                problems.append("source '\(route.source)': route \(route.method) \(route.path) is taken by \(owner)")
            } else if let other = seen["\(route.method) \(route.path)"], other != route.source {
                problems.append("source '\(route.source)': route \(route.method) \(route.path) is already served by source '\(other)'")
            }
            seen["\(route.method) \(route.path)"] = route.source
        }
        return problems
    }

    /// Address and port.
    public var listener: ListenerConfiguration
    /// Event sources, started in order.
    public var sources: [SourceConfiguration]
    /// WebSocket endpoints, matched by exact path.
    public var endpoints: [EndpointConfiguration]
    /// How long shutdown waits for clients to acknowledge the 1001 close
    /// (`shutdown.grace`; `shutdown_grace` is its older spelling).
    public var shutdownGrace: ConfigDuration { shutdown.grace }
    /// How a SIGTERM closes clients: spread over `drain`, each told when to come back.
    public var shutdown: ShutdownConfiguration
    /// The dashboard page, `/client.js` and `/endpoints.json`.
    public var dashboard: DashboardConfiguration
    /// The shortest time between two flush rounds on an event loop: frames that reach a
    /// connection within it leave in one write. Zero writes on the next loop tick.
    public var flushInterval: ConfigDuration
    /// The longest `flush_interval` accepted: it is added latency under load.
    public static let maximumFlushInterval = ConfigDuration.milliseconds(100)
    /// The default `flush_interval`.
    public static let defaultFlushInterval = ConfigDuration.milliseconds(2)
    /// Several instances sharing events through Redis, when set.
    public var cluster: ClusterConfiguration?
    /// Key that unlocks the detailed views (`/stats` with every subscribed topic name), by
    /// `X-Admin-Key: KEY` or `Authorization: Bearer KEY`. Unset: the environment variable
    /// `SWITCHBOARD_ADMIN_KEY`; empty: no detailed views at all.
    public var adminKey: String?
}

/// `cluster: {redis: URL}`: every event that enters any instance reaches the clients of
/// every instance once; sources with `run: once` run on one instance at a time.
public struct ClusterConfiguration: Sendable, Decodable {
    public var redis: RedisURL
    /// The pub/sub channel events travel on.
    public var channel: String
    /// How long a `run: once` lease lasts without renewal.
    public var leaseTTL: ConfigDuration

    enum CodingKeys: String, CodingKey {
        case redis, channel
        case leaseTTL = "lease_ttl"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        redis = try RedisURL(parsing: container.decode(String.self, forKey: .redis))
        channel = try container.value(.channel, default: "switchboard:events")
        leaseTTL = try container.value(.leaseTTL, default: .seconds(10))
        if leaseTTL.nanoseconds < 1_000_000_000 { throw ConfigValidationError("'lease_ttl' must be at least 1s") }
    }
}

/// Where a source runs when several instances share a cluster.
public enum SourceRunPolicy: String, Sendable, ConfigEnum {
    /// On every instance (sources that receive: webhooks, Redis subscriptions with the bus off).
    case everywhere
    /// On one instance at a time, holding a Redis lease (timers that poll a backend).
    case once
    public static var configPlaceholder: SourceRunPolicy { .everywhere }
}

extension GatewayConfiguration: Decodable {
    enum CodingKeys: String, CodingKey {
        case listener, sources, endpoints, cluster, shutdown, dashboard
        case adminKey = "admin_key"
        case shutdownGrace = "shutdown_grace"
        case flushInterval = "flush_interval"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        listener = try container.value(.listener, default: ListenerConfiguration())
        if container.contains(.sources) {
            var list = try container.nestedUnkeyedContainer(forKey: .sources)
            sources = list.decodeEach(SourceConfiguration.self)
        } else {
            sources = []
        }
        if container.contains(.endpoints) {
            var list = try container.nestedUnkeyedContainer(forKey: .endpoints)
            endpoints = list.decodeEach(EndpointConfiguration.self)
        } else {
            endpoints = []
        }
        shutdown = try container.value(.shutdown, default: ShutdownConfiguration())
        if container.contains(.shutdownGrace) {
            shutdown.grace = try container.value(.shutdownGrace, default: .seconds(2))
            if let node = decoder as? NodeDecoder, let block = node.mappingValue("shutdown"), block.mappingValue("grace") != nil {
                node.reportRegardless("shutdown_grace and shutdown.grace are both set", hint: "keep shutdown.grace (shutdown_grace is its older spelling)", key: "shutdown_grace")
            }
        }
        dashboard = try container.value(.dashboard, default: DashboardConfiguration())
        flushInterval = try container.value(.flushInterval, default: Self.defaultFlushInterval)
        cluster = try container.decodeIfPresent(ClusterConfiguration.self, forKey: .cluster)
        adminKey = try container.decodeIfPresent(String.self, forKey: .adminKey)

        guard let nodeDecoder = decoder as? NodeDecoder else { return }
        if dashboard.enabled, let clash = endpoints.first(where: { $0.path == dashboard.path || $0.path == "/client.js" || $0.path == "/endpoints.json" }) {
            nodeDecoder.report(
                "endpoint path '\(clash.path)' is taken by the dashboard",
                hint: "move the dashboard (dashboard: {path: /dashboard}) or turn it off (dashboard: {enabled: false})",
                key: "dashboard"
            )
        }
        if flushInterval.nanoseconds > Self.maximumFlushInterval.nanoseconds {
            nodeDecoder.report(
                "flush_interval \(flushInterval) is too long",
                hint: "it delays every frame under load; use 0s–100ms (default 2ms)",
                key: "flush_interval"
            )
        }
        if !container.contains(.endpoints) && !container.contains(.sources) {
            nodeDecoder.report("the configuration defines neither sources nor endpoints", hint: "see configs/default.yaml for a starting point")
        }
        var seenPaths: [String: Int] = [:]
        for (index, endpoint) in endpoints.enumerated() {
            for (key, path) in [("path", endpoint.path), ("stats_path", endpoint.statsPath)] {
                guard let path, Self.isBuiltInPath(path) else { continue }
                nodeDecoder.session.report(
                    "\(key) '\(path)' is taken by a built-in route",
                    hint: "the gateway itself answers \(Self.builtInPaths.sorted().joined(separator: ", ")) and /admin/…; pick another path",
                    mark: endpoint.position,
                    path: [.key("endpoints"), .index(index), .key(key)],
                    plugin: nil
                )
            }
            if let statsPath = endpoint.statsPath, dashboard.enabled, [dashboard.path, "/client.js", "/endpoints.json"].contains(statsPath) {
                nodeDecoder.session.report(
                    "stats_path '\(statsPath)' is taken by the dashboard",
                    hint: "move the dashboard (dashboard: {path: /dashboard}) or pick another stats_path",
                    mark: endpoint.position,
                    path: [.key("endpoints"), .index(index), .key("stats_path")],
                    plugin: nil
                )
            }
            if let statsPath = endpoint.statsPath, let other = endpoints[..<index].firstIndex(where: { $0.statsPath == statsPath }) {
                nodeDecoder.session.report(
                    "stats_path '\(statsPath)' is also the stats_path of endpoints[\(other)]",
                    mark: endpoint.position,
                    path: [.key("endpoints"), .index(index), .key("stats_path")],
                    plugin: nil
                )
            }
            if let statsPath = endpoint.statsPath, let other = endpoints.firstIndex(where: { $0.path == statsPath }) {
                nodeDecoder.session.report(
                    "stats_path '\(statsPath)' is the path of endpoints[\(other)]",
                    mark: endpoint.position,
                    path: [.key("endpoints"), .index(index), .key("stats_path")],
                    plugin: nil
                )
            }
            if let first = seenPaths[endpoint.path] {
                nodeDecoder.session.report(
                    "duplicate endpoint path '\(endpoint.path)'",
                    hint: "already used by endpoints[\(first)]",
                    mark: endpoint.position,
                    path: [.key("endpoints"), .index(index), .key("path")],
                    plugin: nil
                )
            } else {
                seenPaths[endpoint.path] = index
            }
        }
        var seenNames: [String: Int] = [:]
        for (index, source) in sources.enumerated() {
            if let first = seenNames[source.name] {
                nodeDecoder.session.report(
                    "duplicate source name '\(source.name)'",
                    hint: "already used by sources[\(first)]; give each source a distinct 'name'",
                    mark: source.position,
                    path: [.key("sources"), .index(index)],
                    plugin: source.plugin
                )
            } else {
                seenNames[source.name] = index
            }
        }
    }
}

/// Where the gateway listens, and the limits a client meets before any endpoint sees it.
/// `SWITCHBOARD_HOST` / `SWITCHBOARD_PORT` and the CLI flags override host and port.
public struct ListenerConfiguration: Sendable, Decodable {
    /// Interface to bind, e.g. `0.0.0.0`, `127.0.0.1` or `::`.
    public var host: String = "0.0.0.0"
    /// TCP port; 0 picks a free one (the log says which).
    public var port: Int = 8080
    /// Most open client sockets (HTTP and WebSocket together); past it a new connection
    /// gets `503` and is closed. `0` (default) = the process's open-file limit less 64
    /// kept for sources, Redis and logs, so the gateway refuses clearly instead of failing
    /// to accept.
    public var maxConnections: Int = 0
    /// Most open sockets from one IP address; past it `503`. `0` = no limit.
    public var maxConnectionsPerIP: Int = 1000
    /// Time from accept until the request head (or the WebSocket upgrade) is complete;
    /// a socket that sends nothing, or sends slowly, is closed after it.
    public var handshakeTimeout: ConfigDuration = .seconds(10)
    /// How long a kept-alive HTTP connection may sit idle between requests.
    public var idleTimeout: ConfigDuration = .seconds(60)
    /// Largest request head (request line and headers); larger → `431` and close.
    public var maxHeaderSize: ConfigByteSize = ConfigByteSize(bytes: 32 * 1024)
    /// TLS for `https://` and `wss://`; plain HTTP when nil.
    public var tls: ListenerTLSConfiguration?

    public init() {}

    enum CodingKeys: String, CodingKey {
        case host, port, tls
        case maxConnections = "max_connections"
        case maxConnectionsPerIP = "max_connections_per_ip"
        case handshakeTimeout = "handshake_timeout"
        case idleTimeout = "idle_timeout"
        case maxHeaderSize = "max_header_size"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        host = try container.value(.host, default: "0.0.0.0")
        port = try container.value(.port, default: 8080)
        maxConnections = try container.value(.maxConnections, default: 0)
        maxConnectionsPerIP = try container.value(.maxConnectionsPerIP, default: 1000)
        handshakeTimeout = try container.value(.handshakeTimeout, default: .seconds(10))
        idleTimeout = try container.value(.idleTimeout, default: .seconds(60))
        maxHeaderSize = try container.value(.maxHeaderSize, default: ConfigByteSize(bytes: 32 * 1024))
        tls = try container.decodeIfPresent(ListenerTLSConfiguration.self, forKey: .tls)
        guard let node = decoder as? NodeDecoder else { return }
        if !(0...65535).contains(port) {
            node.report("port \(port) is out of range", hint: "use 1–65535, or 0 for any free port", key: "port")
        }
        if host.isEmpty {
            node.report("host must not be empty", hint: "use 0.0.0.0 for all interfaces", key: "host")
        }
        if maxConnections < 0 {
            node.report("max_connections must be 0 (the open-file limit) or more", key: "max_connections")
        }
        if maxConnectionsPerIP < 0 {
            node.report("max_connections_per_ip must be 0 (no limit) or more", key: "max_connections_per_ip")
        }
        if handshakeTimeout.nanoseconds <= 0 || handshakeTimeout.nanoseconds > 600_000_000_000 {
            node.report("handshake_timeout must be between 1ms and 10m, got \(handshakeTimeout)", key: "handshake_timeout")
        }
        if idleTimeout.nanoseconds <= 0 || idleTimeout.nanoseconds > 86_400_000_000_000 {
            node.report("idle_timeout must be between 1ms and 24h, got \(idleTimeout)", key: "idle_timeout")
        }
        if maxHeaderSize.bytes < 1024 || maxHeaderSize.bytes > 1024 * 1024 {
            node.report("max_header_size must be between 1KiB and 1MiB, got \(maxHeaderSize)", key: "max_header_size")
        }
    }
}

/// One source from the `sources:` list: kernel-level keys plus the plugin's own.
public struct SourceConfiguration: Sendable, Decodable {
    /// Unique name (defaults to the plugin name), used in logs, `/readyz` and `/stats`.
    public var name: String
    /// The plugin's registered name.
    public var plugin: String
    /// The decoded plugin configuration, ready to build.
    public var builder: SourceBuilder
    /// Keep the last event of each topic this source publishes and send it to every new
    /// subscriber of that topic right away (a status snapshot on connect).
    public var retain: Bool
    /// `once`: with a cluster, only the instance holding the source's lease runs it.
    public var run: SourceRunPolicy
    /// Whether every cluster instance receives this source's events by itself.
    public var receivesOnEveryInstance = false
    /// Position in the file, for later diagnostics.
    var position: ConfigPosition?
    /// The block's canonical text (``DecodingSession/fingerprint(of:excluding:)``): a reload
    /// keeps a source running when its fingerprint did not change.
    public var fingerprint = ""

    enum CodingKeys: String, CodingKey { case name, plugin, retain, run }

    public init(name: String, plugin: String, builder: SourceBuilder, retain: Bool = false, run: SourceRunPolicy = .everywhere) {
        self.name = name
        self.plugin = plugin
        self.builder = builder
        self.retain = retain
        self.run = run
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        plugin = try container.decode(String.self, forKey: .plugin)
        if let nodeDecoder = decoder as? NodeDecoder {
            plugin = nodeDecoder.currentPluginName(plugin, registry: nodeDecoder.session.registry)
        }
        name = try container.value(.name, default: plugin)
        retain = try container.value(.retain, default: false)
        run = try container.value(.run, default: .everywhere)
        guard let nodeDecoder = decoder as? NodeDecoder else { throw ReportedError() }
        position = nodeDecoder.node.mark
        fingerprint = nodeDecoder.session.fingerprint(of: nodeDecoder.node)
        let registry = nodeDecoder.session.registry
        guard !plugin.isEmpty else { throw ReportedError() }
        guard let factory = registry.sources[plugin] else {
            let known = registry.sources.keys.sorted()
            let suggestion = Suggestion.closest(to: plugin, in: known).map { "did you mean '\($0)'? " } ?? ""
            nodeDecoder.report("unknown source plugin '\(plugin)'", hint: "\(suggestion)available: \(known.joined(separator: ", "))", key: "plugin")
            throw ReportedError()
        }
        receivesOnEveryInstance = factory.receivesOnEveryInstance
        builder = try nodeDecoder.forPlugin(plugin).decodePlugin(declaring: factory.keys.map(\.name), factory.decode)
    }
}

typealias ConfigPosition = Yams.Mark

import Yams

/// `shutdown:`: what SIGTERM (or SIGINT) does. The gateway stops accepting, then closes its
/// WebSocket clients with 1001 spread evenly over `drain` while deliveries go on to the
/// rest; each close reason says when to come back (`reconnect_after_ms=N`, a random delay
/// up to `reconnect_jitter`), so one instance's clients do not all return in the same
/// second. Sources stop last. A second signal closes everything at once.
public struct ShutdownConfiguration: Sendable, Decodable, Equatable {
    /// The window over which clients are closed.
    public var drain: ConfigDuration = .seconds(5)
    /// How long a closed client has to answer the close handshake.
    public var grace: ConfigDuration = .seconds(2)
    /// The largest reconnect delay suggested in a close reason.
    public var reconnectJitter: ConfigDuration = .seconds(5)

    public init() {}

    enum CodingKeys: String, CodingKey {
        case drain, grace
        case reconnectJitter = "reconnect_jitter"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        drain = try container.value(.drain, default: .seconds(5))
        grace = try container.value(.grace, default: .seconds(2))
        reconnectJitter = try container.value(.reconnectJitter, default: .seconds(5))
        guard let node = decoder as? NodeDecoder else { return }
        if drain.nanoseconds < 0 || drain.nanoseconds > 600_000_000_000 {
            node.report("drain must be between 0s and 10m, got \(drain)", key: "drain")
        }
        if grace.nanoseconds < 0 || grace.nanoseconds > 60_000_000_000 {
            node.report("grace must be between 0s and 1m, got \(grace)", key: "grace")
        }
        if reconnectJitter.nanoseconds < 0 || reconnectJitter.nanoseconds > 600_000_000_000 {
            node.report("reconnect_jitter must be between 0s and 10m, got \(reconnectJitter)", key: "reconnect_jitter")
        }
    }
}

/// `dashboard:`: a page to watch and try the gateway (default at `/`), the JavaScript client
/// it uses at `/client.js` and the endpoint list at `/endpoints.json`.
public struct DashboardConfiguration: Sendable, Decodable, Equatable {
    public var enabled = true
    /// Where the page is served.
    public var path = "/"

    public init() {}

    enum CodingKeys: String, CodingKey { case enabled, path }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        enabled = try container.value(.enabled, default: true)
        path = try container.value(.path, default: "/")
        guard let node = decoder as? NodeDecoder else { return }
        if !path.hasPrefix("/") || path.contains("?") || path.contains(" ") {
            node.report("dashboard path must start with '/' and contain no query or spaces, got '\(path)'", key: "path")
        }
        if ["/client.js", "/endpoints.json"].contains(path) || GatewayConfiguration.isBuiltInPath(path) {
            node.report("dashboard path '\(path)' is taken by a built-in route", hint: "e.g. /dashboard", key: "path")
        }
    }
}

/// `listener.tls`: serve `https://` and `wss://` with these PEM files (TLS 1.2 and newer).
/// The files are read again on every reload.
public struct ListenerTLSConfiguration: Sendable, Decodable, Equatable {
    /// PEM certificate chain, leaf first.
    public var certificate: String
    /// PEM private key.
    public var key: String

    enum CodingKeys: String, CodingKey { case certificate, key }

    public init(certificate: String, key: String) {
        self.certificate = certificate
        self.key = key
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        certificate = try container.decode(String.self, forKey: .certificate)
        key = try container.decode(String.self, forKey: .key)
        guard let node = decoder as? NodeDecoder else { return }
        for (name, path) in [("certificate", certificate), ("key", key)] where !path.isEmpty {
            if !FileManager.default.isReadableFile(atPath: path) {
                node.report("cannot read the TLS \(name) file '\(path)'", hint: "a PEM file readable by the gateway's user", key: name)
            }
        }
    }
}

import Foundation
