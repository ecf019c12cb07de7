import Logging
import NIOCore

/// A running source: turns something outside into ``Event``s.
///
/// The kernel calls ``run()`` inside a task and cancels that task to stop the source. A
/// source that loses its backend throws from `run()` (or reports `.retrying` and keeps
/// going); the kernel's supervisor restarts it with exponential backoff and jitter, so
/// sources do not write reconnect loops of their own.
public protocol EventSource: Sendable {
    /// Runs until the task is cancelled. Throwing means "not connected"; the kernel retries.
    func run() async throws
    /// Whether the source reports `connected` itself (once its backend answers) rather than
    /// counting as connected while `run()` runs. Default: `false`.
    var reportsOwnHealth: Bool { get }
}

extension EventSource {
    public var reportsOwnHealth: Bool { false }
}

/// Health of a source, shown in `/readyz` and `/stats`.
public enum SourceHealth: Sendable, Equatable {
    case starting
    case connected
    case retrying(lastError: String)
    case failed(lastError: String)
    case stopped
    /// A `run: once` source waiting while another instance holds its lease.
    case standby

    /// A one-word label (`connected`, `retrying`, …).
    public var label: String {
        switch self {
        case .starting: return "starting"
        case .connected: return "connected"
        case .retrying: return "retrying"
        case .failed: return "failed"
        case .stopped: return "stopped"
        case .standby: return "standby"
        }
    }
}

/// What a source may do with the gateway: emit events, add HTTP routes, read the
/// gateway's stats and log. Sources never see connections.
public protocol SourceContext: Sendable {
    /// The source's name from YAML (or its plugin name when unnamed).
    var sourceName: String { get }
    /// A logger labelled with the source name.
    var logger: Logger { get }
    /// Hands one event to the kernel for routing.
    func emit(_ event: Event)
    /// Registers an HTTP route on the gateway's port. Call only from `build`.
    func registerRoute(_ route: HTTPRoute)
    /// A snapshot of the gateway's own statistics (what `/stats` returns).
    func statsSnapshot() async -> JSONValue
    /// Reports the source's health; the kernel logs changes once, not per retry.
    func reportHealth(_ health: SourceHealth)
}

/// A source plugin: a config type, a name for YAML and a builder.
public protocol SourcePlugin: SendableMetatype {
    /// Configuration decoded from the source's YAML mapping; unknown keys are errors.
    associatedtype Config: PluginConfig
    /// The `plugin:` name in YAML.
    static var typeName: String { get }
    /// Summary, keys and examples for generated docs.
    static var spec: PluginSpec { get }
    /// Validates `config`, registers routes, and returns the runnable source.
    static func build(config: Config, context: any SourceContext) async throws -> any EventSource
    /// Whether every instance of a cluster receives this source's events by itself (a
    /// Redis pub/sub subscription does): then its events are not forwarded on the cluster
    /// bus unless the source runs `once`. Default: `false`.
    static var receivesOnEveryInstance: Bool { get }
}

extension SourcePlugin {
    public static var receivesOnEveryInstance: Bool { false }
}

/// An HTTP route contributed by a plugin (the webhook publish API, for instance).
///
/// Plugins stay independent of the HTTP framework: the server adapts these plain values.
public struct HTTPRoute: Sendable {
    /// `GET`, `POST`, …
    public var method: String
    /// Absolute path such as `/api/publish`.
    public var path: String
    /// Bodies larger than this are refused with 413 before the handler runs.
    public var maxBodySize: Int
    /// Produces the response.
    public var handler: @Sendable (HTTPRouteRequest) async -> HTTPRouteResponse
    /// A line for the start-up log, given the gateway's base URL (`http://host:port`), e.g.
    /// a ready-to-paste `curl` command.
    public var announcement: (@Sendable (String) -> String)?
    /// Checks the request's headers and query *before* its body is read (the `body` it is
    /// given is empty): a response refuses the request without reading a byte of the body,
    /// so an unauthenticated client cannot make the gateway buffer `maxBodySize` bytes.
    public var authorize: (@Sendable (HTTPRouteRequest) -> HTTPRouteResponse?)?

    public init(
        method: String,
        path: String,
        maxBodySize: Int,
        handler: @escaping @Sendable (HTTPRouteRequest) async -> HTTPRouteResponse
    ) {
        self.method = method
        self.path = path
        self.maxBodySize = maxBodySize
        self.handler = handler
    }
}

/// A request as seen by a plugin route.
public struct HTTPRouteRequest: Sendable, HeaderAndQueryLookup {
    /// Header fields in order; names as sent.
    public var headers: [(name: String, value: String)]
    /// Decoded query parameters in order.
    public var query: [(name: String, value: String)]
    /// The whole body (already limited to the route's maximum size).
    public var body: ByteBuffer
    /// Peer address as text, when known.
    public var remoteAddress: String?

    public init(
        headers: [(name: String, value: String)],
        query: [(name: String, value: String)],
        body: ByteBuffer,
        remoteAddress: String?
    ) {
        self.headers = headers
        self.query = query
        self.body = body
        self.remoteAddress = remoteAddress
    }

}

/// A response from a plugin route; bodies are JSON.
public struct HTTPRouteResponse: Sendable {
    public var status: Int
    public var headers: [(name: String, value: String)]
    public var body: JSONValue

    public init(status: Int, headers: [(name: String, value: String)] = [], body: JSONValue) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    /// A JSON error body `{"error":{"code","message"}}` with `status`.
    public static func error(_ status: Int, code: String, message: String) -> HTTPRouteResponse {
        HTTPRouteResponse(status: status, body: ["error": ["code": .string(code), "message": .string(message)]])
    }
}

/// Header and query lookups shared by upgrade requests and plugin route requests.
public protocol HeaderAndQueryLookup {
    var headers: [(name: String, value: String)] { get }
    var query: [(name: String, value: String)] { get }
}

extension HeaderAndQueryLookup {
    /// The first header named `name` (case-insensitive).
    public func header(_ name: String) -> String? {
        let lowered = name.lowercased()
        return headers.first { $0.name.lowercased() == lowered }?.value
    }

    /// The first query parameter named `name`.
    public func queryValue(_ name: String) -> String? {
        query.first { $0.name == name }?.value
    }

    /// The credential of an `Authorization: Bearer <credential>` header, trimmed.
    public var bearerToken: String? {
        guard let authorization = header("Authorization"), authorization.lowercased().hasPrefix("bearer ") else { return nil }
        return String(authorization.dropFirst(7)).trimmingSpaces()
    }
}
