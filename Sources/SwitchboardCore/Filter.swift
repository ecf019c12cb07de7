import Logging

/// The parts of a WebSocket upgrade request a filter may look at.
public struct UpgradeRequest: Sendable, HeaderAndQueryLookup {
    /// Endpoint path, without the query.
    public var path: String
    /// Decoded query parameters in order.
    public var query: [(name: String, value: String)]
    /// Header fields in order.
    public var headers: [(name: String, value: String)]
    /// Peer IP address as text, when known.
    public var remoteAddress: String?

    public init(
        path: String,
        query: [(name: String, value: String)],
        headers: [(name: String, value: String)],
        remoteAddress: String?
    ) {
        self.path = path
        self.query = query
        self.headers = headers
        self.remoteAddress = remoteAddress
    }

}

/// Who a connection belongs to, as established by an auth filter.
public struct Principal: Sendable, Equatable {
    /// Subject or key name.
    public var identity: String
    /// Roles granted.
    public var roles: [String]
    /// Topic patterns this principal may subscribe to; `nil` means no restriction of its own.
    public var topics: [TopicPattern]?
    /// Seconds since the epoch after which the connection is closed with 1008
    /// `token expired` (the credential's expiry plus any leeway), if it expires.
    public var expiresAt: Int64?

    public init(identity: String, roles: [String] = [], topics: [TopicPattern]? = nil, expiresAt: Int64? = nil) {
        self.identity = identity
        self.roles = roles
        self.topics = topics
        self.expiresAt = expiresAt
    }
}

/// A filter's verdict on an upgrade request.
public enum FilterDecision: Sendable, Equatable {
    /// Let the request through, optionally establishing or replacing the principal.
    case admit(Principal?)
    /// Refuse with an HTTP status before any WebSocket byte is sent; `retryAfter` (seconds)
    /// becomes a `Retry-After` header.
    case deny(status: Int, reason: String, retryAfter: Int? = nil)
}

/// What a filter keeps for one admitted connection: per-message decisions and the release
/// of anything reserved for it. Called on the connection's event loop only.
public protocol ConnectionGuard: AnyObject, Sendable {
    /// A client data message arrived (`now` in nanoseconds, monotonic).
    func messageReceived(now: Int64) -> MessageVerdict
    /// The connection is gone; release what was reserved. Called exactly once.
    func connectionClosed()
}

/// A guard's decision on one client message.
public enum MessageVerdict: Sendable, Equatable {
    case accept
    /// Answer with an error reply; the connection stays open.
    case reject(code: String, message: String)
    /// Close the connection with this code.
    case close(code: UInt16, reason: String)
}

/// A filter's last word once the whole chain admitted a request.
public enum FilterAttachment: Sendable {
    /// Nothing to keep per connection.
    case none
    /// Keep this guard for the connection's lifetime.
    case guarded(any ConnectionGuard)
    /// Refuse after all (a limit reached between `admit` and now).
    case deny(status: Int, reason: String, retryAfter: Int?)
}

/// A filter in an endpoint's chain. Filters run in the order listed in YAML.
public protocol Filter: Sendable {
    /// Decides on the upgrade request. `principal` is what earlier filters established.
    func admit(_ request: UpgradeRequest, principal: Principal?) async -> FilterDecision
    /// Decides whether a connection may subscribe to `topic`; the default allows.
    func allowSubscription(to topic: String, principal: Principal?) -> Bool
    /// Called after every filter admitted the request, right before the upgrade: reserve
    /// per-connection resources atomically, or refuse. The default keeps nothing.
    func attach(_ request: UpgradeRequest, principal: Principal?) -> FilterAttachment
    /// A client sent a `refresh` message carrying `credential` (a new token). Returns the
    /// principal the new credential establishes (`.admit`), a refusal (`.deny`; the
    /// connection keeps its current credential until it expires), or `nil` when this filter
    /// does not take refreshes (the default).
    func refresh(credential: String, current: Principal?) async -> FilterDecision?
    /// A configuration reload re-runs the new chain on an open connection's upgrade
    /// request. The default decides as ``admit(_:principal:)`` does; a filter whose `admit`
    /// spends something only a new connection should (a connect-rate token) overrides it.
    func recheck(_ request: UpgradeRequest, principal: Principal?) async -> FilterDecision
}

extension Filter {
    public func allowSubscription(to topic: String, principal: Principal?) -> Bool { true }
    public func attach(_ request: UpgradeRequest, principal: Principal?) -> FilterAttachment { .none }
    public func refresh(credential: String, current: Principal?) async -> FilterDecision? { nil }
    public func recheck(_ request: UpgradeRequest, principal: Principal?) async -> FilterDecision {
        await admit(request, principal: principal)
    }
}

/// What a filter may use while being built.
public struct FilterContext: Sendable {
    /// Path of the endpoint the filter belongs to.
    public var endpointPath: String
    /// Logger labelled with the filter.
    public var logger: Logger
    /// Where the filter records its denials: counted per reason for `/stats`, logged at
    /// most once per second.
    public var denials: FilterDenials

    public init(endpointPath: String, logger: Logger, denials: FilterDenials? = nil) {
        self.endpointPath = endpointPath
        self.logger = logger
        self.denials = denials ?? FilterDenials(filter: "filter", endpoint: endpointPath, logger: logger)
    }
}

/// A filter plugin: config type, YAML name and builder.
public protocol FilterPlugin: SendableMetatype {
    associatedtype Config: PluginConfig
    static var typeName: String { get }
    static var spec: PluginSpec { get }
    static func build(config: Config, context: FilterContext) async throws -> any Filter
}

/// Whether a filter enforces its decisions or only reports them.
/// Every filter takes `mode: observe` to roll out safely: log and count, deny nothing.
public enum FilterMode: String, Sendable, ConfigEnum {
    case enforce, observe
    public static var configPlaceholder: FilterMode { .enforce }

    /// The `mode` key every filter declares, once for all of them.
    public static let key = DefaultedKey(
        "mode", "enforce | observe", default: FilterMode.enforce, "`observe` logs and counts what would be denied and denies nothing."
    )
}

