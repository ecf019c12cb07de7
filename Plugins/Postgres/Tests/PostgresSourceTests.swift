import Foundation
import PostgresPlugin
import SwitchboardConfig
import SwitchboardCore
import SwitchboardTesting
import Testing

/// The `postgres` source against a real PostgreSQL server on a free port. CI installs
/// PostgreSQL, so a missing server fails these tests rather than skipping them.
@Suite(.serialized)
struct PostgresSourceTests {
    func config(_ yaml: String) throws -> PostgresSource.Config {
        try ConfigurationLoader.decodePluginConfig(PostgresSource.Config.self, yaml: yaml, plugin: PostgresSource.typeName)
    }

    func source(_ yaml: String, context: RecordingSourceContext) async throws -> any EventSource {
        try await PostgresSource.build(config: config(yaml), context: context)
    }

    /// Waits (10 s at most) until the source reported `connected` `count` times.
    func waitConnected(_ context: RecordingSourceContext, count: Int = 1) async -> Bool {
        let deadline = ContinuousClock.now + .seconds(10)
        while context.healthReports.filter({ $0 == .connected }).count < count {
            guard ContinuousClock.now < deadline else { return false }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return true
    }

    /// What `run()` threw (or a note that it returned), within 10 s.
    func failure(of task: Task<Void, any Error>) async -> String {
        let timeout = Task {
            try await Task.sleep(for: .seconds(10))
            task.cancel()
        }
        defer { timeout.cancel() }
        do {
            try await task.value
            return "run() returned"
        } catch {
            #expect(error is SourceFailure, "\(type(of: error)): \(error)")
            return "\(error)"
        }
    }

    // MARK: configuration

    @Test func theDocumentedExampleMeansWhatItSays() throws {
        let example = try #require(PostgresSource.spec.examples.first)
        // "sources:\n  - name: …\n    plugin: postgres\n    …": the item's own keys as a block.
        let block = example.split(separator: "\n").dropFirst().map { String($0.dropFirst(4)) }
            .filter { !$0.hasPrefix("name:") && !$0.hasPrefix("plugin:") }
            .joined(separator: "\n")
        let config = try config(block)
        #expect(config.channels == ["orders_changed", "jobs"])
        #expect(config.user == "app" && config.database == "shop" && config.host == "127.0.0.1")
        #expect(config.password?.value == "")  // ${PG_PASSWORD:-} unset: no password
    }

    @Test func defaults() throws {
        let config = try config("channels: [jobs]\ntopic: t")
        #expect(config.host == "127.0.0.1" && config.port == 5432 && config.user == "postgres" && config.database == "postgres")
        #expect(config.password == nil && config.connectTimeout == .seconds(5))
        #expect(try self.config("channels: [jobs]\ntopic: t\nuser: app").database == "app")
        let secret = try self.config("channels: [jobs]\ntopic: t\npassword: hunter2").password
        #expect(secret?.value == "hunter2" && secret.map { "\($0)" } == "***")
    }

    @Test(arguments: [
        ("channels: [\"orders-changed\"]\ntopic: t", "channel 'orders-changed' is not a valid PostgreSQL identifier"),
        ("channels: [\"1jobs\"]\ntopic: t", "not starting with a digit"),
        ("channels: [\"jobs; DROP TABLE x\"]\ntopic: t", "not a valid PostgreSQL identifier"),
        ("channels: [\"\(String(repeating: "a", count: 64))\"]\ntopic: t", "1 to 63 ASCII letters"),
        ("channels: []\ntopic: t", "'channels' is empty"),
        ("channels: [a, a]\ntopic: t", "'channels' lists 'a' twice"),
        ("topic: t", "missing required key 'channels'"),
        ("channels: [a]", "missing required key 'topic'"),
        ("channels: [a]\ntopic: t\nchanels: [b]", "unknown key 'chanels'"),
        ("channels: [a]\ntopic: t\nport: 70000", "'port' must be 1–65535"),
        ("channels: [a]\ntopic: \"x:*\"", "must render to a topic"),
        ("channels: [a]\ntopic: t\nconnect_timeout: soon", "expected a duration"),
    ])
    func refusesBadConfigurations(yaml: String, message: String) {
        do {
            _ = try config(yaml)
            Issue.record("accepted: \(yaml)")
        } catch {
            #expect("\(error)".contains(message), "\(error)")
        }
    }

    // MARK: against a server

    /// NOTIFY on two channels becomes events; the server going away makes `run()` throw a
    /// readable error; once it is back, running again LISTENs again; cancelling returns at once.
    @Test(.timeLimit(.minutes(2)))
    func relaysNotificationsThrowsWhenTheServerGoesAwayAndListensAgain() async throws {
        let server = try await TestPostgresServer()
        let context = RecordingSourceContext()
        let source = try await source(
            "port: \(server.port)\npassword: not-needed-secret\nchannels: [orders, jobs]\ntopic: \"db:{channel}\"\ntype: change",
            context: context
        )
        let first = Task { try await source.run() }
        try #require(await waitConnected(context), "no connected report: \(context.healthReports)")
        try await server.notify("orders", #"{"type":"order_created","id":7}"#)
        try await server.notify("jobs", "plain text, not JSON")
        try await server.notify("elsewhere", "ignored")
        let events = await context.waitForEvents(2, timeout: .seconds(10))
        try #require(events.count == 2, "\(events)")
        // One sequence per channel: order across channels is not guaranteed.
        let orders = try #require(events.first(where: { $0.topic == "db:orders" }))
        let jobs = try #require(events.first(where: { $0.topic == "db:jobs" }))
        #expect(orders.type == "order_created")
        #expect(orders.data == ["type": "order_created", "id": 7])
        #expect(jobs.type == "change")
        #expect(jobs.data == "plain text, not JSON")

        // The server goes away: run() throws promptly, with a reason a person can read.
        server.stop()
        let started = ContinuousClock.now
        let lost = await failure(of: first)
        #expect(ContinuousClock.now - started < .seconds(5))
        #expect(lost.contains("127.0.0.1:\(server.port)"), "\(lost)")
        #expect(!lost.contains("PSQLError") && !lost.contains("Generic description") && !lost.contains("not-needed-secret"), "\(lost)")

        // Down: connecting fails at once, readably.
        let down = await failure(of: Task { try await source.run() })
        #expect(down.contains("connect to 127.0.0.1:\(server.port) as postgres"), "\(down)")
        #expect(!down.contains("PSQLError") && !down.contains("not-needed-secret"), "\(down)")

        // Back on the same port: a new run() LISTENs again (what the supervisor does).
        try await server.start()
        let second = Task { try await source.run() }
        try #require(await waitConnected(context, count: 2), "no second connected report: \(context.healthReports)")
        try await server.notify("jobs", #"{"n":2}"#)
        let again = await context.waitForEvents(3, timeout: .seconds(10))
        #expect(again.count == 3 && again.last?.topic == "db:jobs" && again.last?.data == ["n": 2], "\(again)")

        // Cancelling closes the connection and returns promptly, without an error.
        let cancelled = ContinuousClock.now
        second.cancel()
        let outcome = await failure(of: second)
        #expect(outcome == "run() returned", "\(outcome)")
        #expect(ContinuousClock.now - cancelled < .seconds(2))
        // … and leaves no session behind on the server.
        var open = try await server.clientSessions()
        for _ in 0..<100 where open != 0 {
            try await Task.sleep(for: .milliseconds(50))
            open = try await server.clientSessions()
        }
        #expect(open == 0)
    }

    /// A fast shutdown ends sessions with a FATAL error: its server message is the reason.
    @Test(.timeLimit(.minutes(1)))
    func aServerErrorIsReportedWithItsMessage() async throws {
        let server = try await TestPostgresServer()
        let context = RecordingSourceContext()
        let source = try await source("port: \(server.port)\nchannels: [jobs]\ntopic: jobs", context: context)
        let task = Task { try await source.run() }
        try #require(await waitConnected(context))
        server.stop(.fast)
        let reason = await failure(of: task)
        #expect(reason.contains("terminating connection due to administrator command"), "\(reason)")

        // A database that does not exist: the server says so.
        try await server.start()
        let missing = try await self.source("port: \(server.port)\ndatabase: nope\nchannels: [jobs]\ntopic: jobs", context: context)
        let refused = await failure(of: Task { try await missing.run() })
        #expect(refused.contains(#"database "nope" does not exist"#), "\(refused)")
    }
}

/// The `postgres` source passes the plugin contract kit against a real PostgreSQL that the
/// kit stops and starts on the same port; afterwards no session of its own is left.
@Suite(.serialized) struct PostgresContractTests {
    @Test(.timeLimit(.minutes(2))) func passesTheSourceContract() async throws {
        let server = try await TestPostgresServer()
        let config = try ConfigurationLoader.decodePluginConfig(
            PostgresSource.Config.self,
            yaml: "port: \(server.port)\nchannels: [jobs]\ntopic: \"db:{channel}\"\nconnect_timeout: 2s",
            plugin: "postgres"
        )
        let events = try await SourceContract(
            build: { context in try await PostgresSource.build(config: config, context: context) },
            trigger: { round, _ in try await server.notify("jobs", #"{"type":"job_update","round":\#(round)}"#) },
            matches: SourceContract.roundInData,
            backend: .init(
                stop: { server.stop() },
                start: { try await server.start() },
                connections: { try await server.clientSessions() }
            )
        ).verify()
        #expect(events.first?.topic == "db:jobs")
        #expect(events.first?.type == "job_update")
    }
}
