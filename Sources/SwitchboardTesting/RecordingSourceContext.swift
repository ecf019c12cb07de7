import Logging
import NIOConcurrencyHelpers
import SwitchboardCore

/// A ``SourceContext`` that records what a source does (events, routes, health), for
/// plugin tests without a kernel or a server.
public final class RecordingSourceContext: SourceContext, @unchecked Sendable {
    public let sourceName: String
    public let logger: Logger
    private let lock = NIOLock()
    private var _events: [Event] = []
    private var _routes: [HTTPRoute] = []
    private var _health: [SourceHealth] = []
    private let stats: JSONValue

    public init(sourceName: String = "test", stats: JSONValue = ["uptime_seconds": 1]) {
        self.sourceName = sourceName
        self.logger = Logger(label: "test.\(sourceName)")
        self.stats = stats
    }

    public var events: [Event] { lock.withLock { _events } }
    public var routes: [HTTPRoute] { lock.withLock { _routes } }
    public var healthReports: [SourceHealth] { lock.withLock { _health } }

    public func emit(_ event: Event) { lock.withLock { _events.append(event) } }
    public func registerRoute(_ route: HTTPRoute) { lock.withLock { _routes.append(route) } }
    public func statsSnapshot() async -> JSONValue { stats }
    public func reportHealth(_ health: SourceHealth) { lock.withLock { _health.append(health) } }

    /// Waits until at least `count` events were emitted or `timeout` passes.
    public func waitForEvents(_ count: Int, timeout: Duration = .seconds(20)) async -> [Event] {
        let deadline = ContinuousClock.now + timeout
        while events.count < count && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
        return events
    }
}
