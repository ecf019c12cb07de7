import Logging
import NIOConcurrencyHelpers
import NIOCore
import Synchronization
import SwitchboardConfig
import SwitchboardCore
import SwitchboardKernel

/// An endpoint's pipeline plus its live counters and open connections.
/// Public so that tests can build a connection handler around a pipeline.
///
/// A reload may give the endpoint a new pipeline (new filters, new settings): new
/// connections take the current one; an open connection keeps the one it was given until
/// the reload hands it the new one (``ConnectionCommand``).
public final class EndpointRuntime: Sendable {
    private struct Settings {
        var pipeline: EndpointPipeline
        var transports: Set<Transport>
    }

    private let settings: NIOLockedValueBox<Settings>
    /// The pipeline new connections get.
    public var pipeline: EndpointPipeline { settings.withLockedValue { $0.pipeline } }
    /// How clients may connect (`transports:`).
    public var transports: Set<Transport> { settings.withLockedValue { $0.transports } }

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
    /// Event frames the slow-consumer policy dropped.
    let dropped = Atomic<Int>(0)
    /// Bytes the endpoint's connections compressed one by one.
    let compression = CompressionTally()
    /// Refusals by kind (oversized, protocol errors, rate, slow consumers, …).
    public let refusals: RefusalCounters
    /// The open WebSocket connections, for reloads and the paced drain.
    let open = OpenConnections()
    /// Set by the gateway, which closes connections itself, spread over the drain window:
    /// the server's quiesce event then no longer closes them all at once.
    let drainIsPaced = Atomic<Bool>(false)

    public init(pipeline: EndpointPipeline, transports: Set<Transport> = [.websocket], logger: Logger = Logger(label: "switchboard")) {
        self.settings = NIOLockedValueBox(Settings(pipeline: pipeline, transports: transports))
        self.refusals = RefusalCounters(scope: pipeline.path, logger: logger)
    }

    /// What new connections get from now on.
    func replace(pipeline: EndpointPipeline, transports: Set<Transport>) {
        settings.withLockedValue { $0 = Settings(pipeline: pipeline, transports: transports) }
    }
}

/// What the gateway tells an open connection from outside its event loop (through
/// `fireUserInboundEventTriggered`, which hops to the loop).
enum ConnectionCommand: Sendable {
    /// Close with `code` and `reason` (1001 on drain and on a removed endpoint).
    case close(code: UInt16, reason: String)
    /// A reload changed the endpoint's filters: the connection's request was run through
    /// the new chain. Refused: close with 1008; admitted: continue under `pipeline` with the
    /// new principal and guards.
    case refiltered(EndpointPipeline, FilterChainDecision)
}

/// One open connection as the gateway sees it from outside.
struct OpenConnection: Sendable {
    let channel: any Channel
    /// What most connections do not have, out of line: an entry of the registry is kept
    /// for every open connection.
    private let extras: Extras?

    private final class Extras: Sendable {
        let request: UpgradeRequest?
        let end: (@Sendable () -> Void)?
        init(request: UpgradeRequest?, end: (@Sendable () -> Void)?) {
            self.request = request
            self.end = end
        }
    }

    init(channel: any Channel, request: UpgradeRequest?, end: (@Sendable () -> Void)? = nil) {
        self.channel = channel
        self.extras = request == nil && end == nil ? nil : Extras(request: request, end: end)
    }

    /// The upgrade request without its handshake headers, for re-running filters.
    var request: UpgradeRequest? { extras?.request }
    /// Ends a stream that is not a WebSocket (SSE): every command ends it, and the client
    /// reconnects through the filters and settings in force.
    var end: (@Sendable () -> Void)? { extras?.end }

    func send(_ command: ConnectionCommand) {
        if let end { end() } else { channel.pipeline.fireUserInboundEventTriggered(command) }
    }
}

/// The open connections of one endpoint.
final class OpenConnections: Sendable {
    private let entries = NIOLockedValueBox<[ObjectIdentifier: OpenConnection]>([:])

    func add(_ connection: OpenConnection) {
        entries.withLockedValue { $0[ObjectIdentifier(connection.channel)] = connection }
    }

    func remove(_ channel: any Channel) {
        entries.withLockedValue { $0[ObjectIdentifier(channel)] = nil }
    }

    var all: [OpenConnection] { entries.withLockedValue { Array($0.values) } }
    var count: Int { entries.withLockedValue { $0.count } }

    /// Sends `command` to every open connection.
    func send(_ command: ConnectionCommand) {
        for connection in all { connection.send(command) }
    }
}

extension UpgradeRequest {
    /// The request as kept for a connection's lifetime: the handshake's own headers (key,
    /// version, extensions, upgrade) mean nothing once upgraded and are dropped.
    func keptForConnection() -> UpgradeRequest {
        var kept = self
        kept.headers.removeAll { header in
            let name = header.name.lowercased()
            // Sec-WebSocket-Protocol stays: a JWT filter may read its token from it.
            return (name.hasPrefix("sec-websocket-") && name != "sec-websocket-protocol") || name == "upgrade" || name == "connection"
        }
        return kept
    }
}

/// The guards a connection's filters attached, released exactly once: when the socket
/// closes, or when a reload's filters replace them.
public final class AttachedGuards: Sendable {
    private let state = NIOLockedValueBox<(guards: [any ConnectionGuard], released: Bool)>(([], false))

    public init(_ guards: [any ConnectionGuard]) {
        state.withLockedValue { $0.guards = guards }
    }

    /// Releases the current guards and keeps `guards` instead (released at once if the
    /// connection is already gone).
    func replace(with guards: [any ConnectionGuard]) {
        let (old, released) = state.withLockedValue { state -> ([any ConnectionGuard], Bool) in
            let old = state.guards
            state.guards = guards
            return (old, state.released)
        }
        for guardian in old { guardian.connectionClosed() }
        if released { releaseAll() }
    }

    func releaseAll() {
        let guards = state.withLockedValue { state -> [any ConnectionGuard] in
            let guards = state.guards
            state.guards = []
            state.released = true
            return guards
        }
        for guardian in guards { guardian.connectionClosed() }
    }
}

/// The endpoints by path, replaced as a whole by a reload; and whether the gateway is
/// draining (new upgrades are then refused).
final class EndpointTable: Sendable {
    private let table: NIOLockedValueBox<[String: EndpointRuntime]>
    let draining = Atomic<Bool>(false)

    init(_ endpoints: [String: EndpointRuntime]) {
        table = NIOLockedValueBox(endpoints)
    }

    var all: [String: EndpointRuntime] {
        get { table.withLockedValue { $0 } }
        set { table.withLockedValue { $0 = newValue } }
    }

    subscript(path: String) -> EndpointRuntime? { table.withLockedValue { $0[path] } }

    /// Why a connection that `pipeline` admitted and that has just joined `runtime`'s
    /// registry belongs to a configuration no longer in force, or nil. The filters of an
    /// upgrade or a stream run off the loop: a drain or a reload may have taken its
    /// snapshot of the open connections meanwhile and would never reach it. Asked after
    /// joining the registry (whose lock orders the two).
    func staleness(of runtime: EndpointRuntime, admittedBy pipeline: EndpointPipeline) -> String? {
        if draining.load(ordering: .relaxed) { return "server shutting down" }
        if self[pipeline.path] !== runtime { return "endpoint \(pipeline.path) was removed by a configuration reload" }
        if runtime.pipeline !== pipeline { return "endpoint settings changed by a configuration reload" }
        return nil
    }
}
