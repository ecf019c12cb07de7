import Logging
import NIOCore
import PostgresNIO
import SwitchboardCore

/// The `postgres` source: PostgreSQL LISTEN/NOTIFY channels as events.
public struct PostgresSource: SourcePlugin {
    public static let typeName = "postgres"
    public static let spec = PluginSpec(
        summary: "LISTEN to PostgreSQL NOTIFY channels; each notification becomes an event",
        examples: ["sources:\n  - name: orders\n    plugin: postgres\n    host: ${PG_HOST:-127.0.0.1}\n    user: app\n    password: ${PG_PASSWORD:-}\n    database: shop\n    channels: [orders_changed, jobs]\n    topic: \"db:{channel}\"\n    type: row_change"]
    )

    public struct Config: PluginConfig {
        public var host: String
        public var port: Int
        public var user: String
        public var password: Secret?
        public var database: String
        public var channels: [String]
        public var mapping: MessageMapping
        public var connectTimeout: ConfigDuration

        static let host = DefaultedKey("host", "string", default: "127.0.0.1", "PostgreSQL server host name or address (no TLS yet: loopback or a private network).")
        static let port = DefaultedKey("port", "int", default: 5432, "Server port.")
        static let user = DefaultedKey("user", "string", default: "postgres", "User to log in as.")
        static let password = OptionalKey<Secret>("password", "string", "Password (`${PG_PASSWORD}`); none when absent or empty. Never logged.")
        static let database = OptionalKey<String>("database", "string", whenAbsent: "the user", "Database to connect to.")
        static let channels = RequiredKey<[String]>("channels", "list of identifiers", "Channels to LISTEN on (case matters: unquoted `NOTIFY Jobs` reaches `jobs`).")
        static let mapping = MessageMapping.Keys(channel: "the NOTIFY channel")
        static let connectTimeout = DefaultedKey("connect_timeout", "duration", default: ConfigDuration.seconds(5), "Connect and login timeout.")
        public static let keys: [any PluginKey] = [host, port, user, password, database, channels] as [any PluginKey] + mapping.all + [connectTimeout]

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: PluginCodingKey.self)
            host = try container.read(Self.host)
            port = try container.read(Self.port)
            user = try container.read(Self.user)
            password = try container.read(Self.password)
            let database = try container.read(Self.database)
            channels = try container.read(Self.channels)
            connectTimeout = try container.read(Self.connectTimeout)
            mapping = try MessageMapping(from: container, keys: Self.mapping)  // reads its keys, then checks the topic
            self.database = database ?? user
            guard !host.isEmpty else { throw ConfigValidationError("'host' is empty") }
            guard (1...65535).contains(port) else { throw ConfigValidationError("'port' must be 1–65535, got \(port)") }
            guard connectTimeout.nanoseconds >= 10_000_000 else { throw ConfigValidationError("'connect_timeout' must be at least 10ms") }
            guard !channels.isEmpty else { throw ConfigValidationError("'channels' is empty", hint: "list the NOTIFY channels to LISTEN on") }
            let rule = "1 to 63 ASCII letters, digits and '_', not starting with a digit"
            for (index, channel) in channels.enumerated() {
                guard Self.isIdentifier(channel) else { throw ConfigValidationError("channel '\(channel)' is not a valid PostgreSQL identifier", hint: rule) }
                guard !channels[..<index].contains(channel) else { throw ConfigValidationError("'channels' lists '\(channel)' twice") }
            }
        }

        /// A name LISTEN can take quoted without escaping: `[A-Za-z_][A-Za-z0-9_]{0,62}`.
        static func isIdentifier(_ name: String) -> Bool {
            (1...63).contains(name.utf8.count) && name.first?.isNumber == false && name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") }
        }
    }

    /// Every listening connection receives each notification itself, like Redis pub/sub.
    public static var receivesOnEveryInstance: Bool { true }

    public static func build(config: Config, context: any SourceContext) async throws -> any EventSource {
        PostgresListenRunner(config: config, context: context)
    }
}

/// One connection per `run()`, LISTENing on every channel; the supervisor reconnects.
struct PostgresListenRunner: EventSource {
    let config: PostgresSource.Config
    let context: any SourceContext
    var reportsOwnHealth: Bool { true }
    private var address: String { "\(config.host):\(config.port)" }

    func run() async throws {
        var configuration = PostgresConnection.Configuration(
            host: config.host, port: config.port, username: config.user,
            password: config.password.flatMap { $0.value.isEmpty ? nil : $0.value }, database: config.database, tls: .disable)
        configuration.options.connectTimeout = .nanoseconds(config.connectTimeout.nanoseconds)  // TCP connect and login
        let connection: PostgresConnection
        do {
            connection = try await PostgresConnection.connect(
                on: PostgresConnection.defaultEventLoopGroup.any(), configuration: configuration, id: 1, logger: context.logger)
        } catch {
            if Task.isCancelled { return }
            throw SourceFailure("connect to \(address) as \(config.user)", reason: Self.reason(error))
        }
        var failure: (any Error)?
        do {
            try await withTaskCancellationHandler { try await listen(on: connection) } onCancel: { connection.startClosing() }
        } catch { failure = error }
        try? await connection.close()  // on every path: PostgresConnection asserts it in deinit
        guard let failure, !Task.isCancelled else { return }
        if failure is SourceFailure { throw failure }
        throw SourceFailure("LISTEN on \(address)", reason: Self.reason(failure))
    }

    /// LISTENs on every channel, reports `connected` once all are confirmed, throws when one ends.
    private func listen(on connection: PostgresConnection) async throws {
        let (listening, ready) = AsyncStream.makeStream(of: Void.self)
        let (mapping, context, count) = (config.mapping, self.context, config.channels.count)
        try await withThrowingTaskGroup(of: String.self) { group in
            defer { connection.startClosing() }  // ends the other sequences before the group waits for them
            for channel in config.channels {
                group.addTask {
                    defer { ready.finish() }  // a failure before every LISTEN is confirmed ends the wait below
                    try await connection.listen(on: channel) { notifications in
                        ready.yield()
                        for try await notification in notifications {
                            context.emit(mapping.event(channel: channel, payload: Array(notification.payload.utf8)))
                        }
                    }
                    return channel
                }
            }
            var confirmed = 0
            for await _ in listening.prefix(count) { confirmed += 1 }
            if confirmed == count { context.reportHealth(.connected) }
            if let channel = try await group.next() { throw SourceFailure("LISTEN \(channel) on \(address)", reason: "the notification stream ended") }
        }
    }

    /// A readable reason (PSQLError's description is vague on purpose); it never holds the password.
    static func reason(_ error: any Error) -> String {
        guard let error = error as? PSQLError else { return "\(error)" }
        if let message = error.serverInfo?[.message] {
            return error.serverInfo?[.sqlState].map { "\(message) (SQLSTATE \($0))" } ?? message
        }
        var text = switch error.code {
        case .serverClosedConnection, .uncleanShutdown: "connection closed by the server"
        case .clientClosedConnection: "connection closed"
        case .connectionError: "cannot connect"
        default: "\(error.code)"
        }
        if let timeout = error.underlying as? ChannelError, case .connectTimeout(let amount) = timeout {
            text += ": no answer within \(ConfigDuration(nanoseconds: amount.nanoseconds))"
        } else if let underlying = error.underlying {
            text += ": \(underlying)"
        }
        return text
    }
}

extension PostgresConnection {
    /// Starts closing without waiting (from cancellation handlers and `defer`).
    fileprivate func startClosing() { let _: EventLoopFuture<Void> = close() }
}
