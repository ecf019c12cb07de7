import NIOCore
import RedisPlugin
import SwitchboardConfig
import SwitchboardCore
import SwitchboardRedis
import SwitchboardTesting
import Testing

/// The RESP client and the Redis sources against a real redis-server on a free port.
@Suite(.serialized, .enabled(if: TestRedisServer.isAvailable, "redis-server is not installed"))
struct RedisSourceTests {
    func source<P: SourcePlugin>(_ plugin: P.Type, _ yaml: String, context: RecordingSourceContext) async throws -> any EventSource {
        let config = try ConfigurationLoader.decodePluginConfig(P.Config.self, yaml: yaml, plugin: P.typeName)
        return try await P.build(config: config, context: context)
    }

    /// Waits until the source reported `connected`.
    func waitConnected(_ context: RecordingSourceContext, count: Int = 1) async {
        for _ in 0..<500 where context.healthReports.filter({ $0 == .connected }).count < count {
            try? await Task.sleep(for: .milliseconds(10))
        }
    }

    @Test func connectionPipelinesAuthenticatesAndSelects() async throws {
        let redis = try await TestRedisServer()
        let connection = try await RedisConnection.connect(to: RedisURL(parsing: redis.url + "/3"))
        let replies = try await connection.sendPipelined((0..<100).map { _ in ["INCR", "counter"] })
        #expect(replies.map(\.integer) == (1...100).map { Int64($0) })
        try await connection.send(["SET", "k", .bytes([0, 1, 255])])
        #expect(try await connection.send(["GET", "k"]) == .bulkString([0, 1, 255]))
        let other = try await redis.run("GET", "k")  // database 0: not there
        #expect(other == "$-1\r\n")
        await #expect(throws: RedisError.server("ERR unknown command 'NOPE', with args beginning with: ")) {
            try await connection.send(["NOPE"])
        }
        connection.close()

        _ = try await redis.run("ACL", "SETUSER", "app", "on", ">app-password", "~*", "&*", "+@all")
        let user = try await RedisConnection.connect(to: RedisURL(parsing: "redis://app:app-password@127.0.0.1:\(redis.port)"))
        #expect(try await user.send(["ACL", "WHOAMI"]).string == "app")
        user.close()
        await #expect(throws: RedisError.self) {
            _ = try await RedisConnection.connect(to: RedisURL(parsing: "redis://app:wrong@127.0.0.1:\(redis.port)"))
        }
        let resp3 = try await RedisConnection.connect(to: RedisURL(parsing: redis.url), protocolVersion: 3)
        if case .map = try await resp3.send(["HELLO", "3"]) {} else { Issue.record("HELLO 3 did not answer with a map") }
        resp3.close()
    }

    @Test func connectsOverTLSTrustingTheGivenCA() async throws {
        let redis = try await TestRedisServer(tls: true)
        let ca = try #require(redis.caFile)
        let url = try RedisURL(parsing: "rediss://localhost:\(redis.port)/1?ca=\(ca)")
        let connection = try await RedisConnection.connect(to: url)
        #expect(try await connection.send(["PING"]) == .simpleString("PONG"))
        connection.close()
        // Without the CA the server's certificate is not trusted.
        await #expect(throws: (any Error).self) {
            let untrusted = try await RedisConnection.connect(to: RedisURL(parsing: "rediss://localhost:\(redis.port)"))
            _ = try await untrusted.send(["PING"])
        }
    }

    /// A connection whose TLS handshake failed after the TCP connect is closed by the time
    /// a command is sent; the command must fail, not wait forever (seen as a CI hang).
    @Test(.timeLimit(.minutes(1)))
    func aCommandOnAClosedConnectionFails() async throws {
        let redis = try await TestRedisServer(tls: true)
        let untrusted = try await RedisConnection.connect(to: RedisURL(parsing: "rediss://localhost:\(redis.port)"))
        try? await untrusted.closeFuture.get()  // the server's certificate is not trusted
        await #expect(throws: RedisError.connectionClosed) {
            _ = try await untrusted.send(["PING"])
        }
    }

    @Test(arguments: [2, 3])
    func publishesChannelsAndPatterns(protocolVersion: Int) async throws {
        let redis = try await TestRedisServer()
        let context = RecordingSourceContext()
        let source = try await source(RedisSource.self, """
            url: \(redis.url)
            channels: ["botrix:jobs:updates"]
            patterns: ["orders:*"]
            topic: "redis:{channel}"
            type: update
            protocol: \(protocolVersion)
            """, context: context)
        let task = Task { try await source.run() }
        await waitConnected(context)
        _ = try await redis.run("PUBLISH", "botrix:jobs:updates", #"{"job_id":"j1","status":"completed"}"#)
        _ = try await redis.run("PUBLISH", "orders:eu", "not json")
        _ = try await redis.run("PUBLISH", "orders:us", #"{"type":"order_created","id":7}"#)
        _ = try await redis.run("PUBLISH", "elsewhere", "ignored")
        let events = await context.waitForEvents(3)
        #expect(events.map(\.topic) == ["redis:botrix:jobs:updates", "redis:orders:eu", "redis:orders:us"])
        #expect(events.map(\.type) == ["update", "update", "order_created"])
        #expect(events.first?.data == ["job_id": "j1", "status": "completed"])
        #expect(events.dropFirst().first?.data == "not json")
        task.cancel()
        _ = try? await task.value
    }

    @Test func throwsWhenRedisGoesAwaySoTheSupervisorReconnects() async throws {
        let redis = try await TestRedisServer()
        let context = RecordingSourceContext()
        let source = try await source(RedisSource.self, "url: \(redis.url)\nchannels: [c]\ntopic: t\nping_interval: 200ms", context: context)
        let task = Task { try await source.run() }
        await waitConnected(context)
        redis.stop()
        let started = ContinuousClock.now
        await #expect(throws: RedisError.self) { try await task.value }
        #expect(ContinuousClock.now - started < .seconds(2))
        // Down at start: connecting throws at once instead of hanging.
        await #expect(throws: (any Error).self) { try await source.run() }
    }

    /// A Redis that stops answering (DEBUG SLEEP blocks the whole server) is detected by
    /// the PING watchdog within two intervals, so the supervisor can reconnect.
    @Test func aSilentRedisIsDetected() async throws {
        let redis = try await TestRedisServer(arguments: ["--enable-debug-command", "yes"])
        let context = RecordingSourceContext()
        let source = try await source(RedisSource.self, "url: \(redis.url)\nchannels: [c]\ntopic: t\nping_interval: 200ms", context: context)
        let task = Task { try await source.run() }
        await waitConnected(context)
        let started = ContinuousClock.now
        let sleeper = Task { try await redis.run("DEBUG", "SLEEP", "3") }
        await #expect(throws: RedisError.timeout) { try await task.value }
        #expect(ContinuousClock.now - started < .seconds(2))
        _ = try? await sleeper.value
    }

    @Test func streamDeliversWhatWasWrittenWhileStoppedInOrderOnce() async throws {
        let redis = try await TestRedisServer()
        let yaml = """
            url: \(redis.url)
            streams: [jobs]
            consumer: gateway-1
            start: all
            field: payload
            topic: jobs
            type: job_update
            block: 100ms
            """
        _ = try await redis.run("XADD", "jobs", "*", "payload", #"{"n":1}"#)
        _ = try await redis.run("XADD", "jobs", "*", "payload", #"{"n":2}"#)

        // First run: what was there before the group existed (start: all).
        let first = RecordingSourceContext()
        let firstSource = try await source(RedisStreamSource.self, yaml, context: first)
        let firstTask = Task { try await firstSource.run() }
        #expect(await first.waitForEvents(2).map(\.data) == [["n": 1], ["n": 2]])
        _ = try await redis.run("XADD", "jobs", "*", "payload", #"{"n":3}"#)
        #expect(await first.waitForEvents(3).map(\.data).last == ["n": 3])
        // An entry is acknowledged just after it was handed over: stop once n=3 is, or the
        // next run rightly reads it again (pending entries are delivered at least once).
        for _ in 0..<200 where !(try await redis.run("XPENDING", "jobs", "switchboard").hasPrefix("*4\r\n:0\r\n")) {
            try await Task.sleep(for: .milliseconds(10))
        }
        firstTask.cancel()
        _ = try? await firstTask.value

        // Written while no gateway runs …
        for n in 4...8 { _ = try await redis.run("XADD", "jobs", "*", "payload", #"{"n":\#(n)}"#) }
        // … and delivered by the next one (a new process: fresh source), none twice.
        let second = RecordingSourceContext()
        let secondSource = try await source(RedisStreamSource.self, yaml, context: second)
        let secondTask = Task { try await secondSource.run() }
        let events = await second.waitForEvents(5)
        try await Task.sleep(for: .milliseconds(300))
        #expect(second.events.map(\.data) == (4...8).map { ["n": .int(Int64($0))] })
        #expect(events.allSatisfy { $0.type == "job_update" && $0.topic == "jobs" && $0.id != nil })
        secondTask.cancel()
        _ = try? await secondTask.value
        #expect(try await redis.run("XPENDING", "jobs", "switchboard").hasPrefix("*4\r\n:0\r\n"))
    }

    @Test(arguments: [
        ("channels: [a]\ntopic: \"x:*\"", "must render to a topic"),
        ("topic: t", "give 'channels' or 'patterns'"),
        ("channels: [a]\ntopic: t\nurl: http://h", "scheme must be redis or rediss"),
        ("channels: [a]\ntopic: \"{user}\"", "only use the {channel} placeholder"),
        ("channels: [a]\ntopic: t\nprotocol: 4", "'protocol' must be 2 or 3"),
    ])
    func refusesBadConfigurations(yaml: String, message: String) {
        do {
            _ = try ConfigurationLoader.decodePluginConfig(RedisSource.Config.self, yaml: yaml, plugin: "redis")
            Issue.record("accepted: \(yaml)")
        } catch {
            #expect(error.description.contains(message), "\(error.description)")
        }
    }
}
