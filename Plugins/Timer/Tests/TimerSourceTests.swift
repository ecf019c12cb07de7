import SwitchboardConfig
import SwitchboardCore
import SwitchboardTesting
import Testing
import TimerPlugin

@Suite struct TimerSourceTests {
    func config(_ yaml: String) throws -> TimerSource.Config {
        try ConfigurationLoader.decodePluginConfig(TimerSource.Config.self, yaml: yaml, plugin: "timer")
    }

    @Test func emitsStaticPayloadsOnSchedule() async throws {
        let context = RecordingSourceContext()
        let source = try await TimerSource.build(
            config: try config("every: 50ms\ntopic: status\ntype: status\ndata:\n  leader: node-1\n  term: 3\n  healthy: true"),
            context: context
        )
        let task = Task { try await source.run() }
        let events = await context.waitForEvents(3)
        task.cancel()
        #expect(events.count >= 3)
        #expect(events.first?.topic == "status")
        #expect(events.first?.data == ["leader": "node-1", "term": 3, "healthy": true])
    }

    @Test func emitsGatewayStats() async throws {
        let context = RecordingSourceContext(stats: ["connections": 7])
        let source = try await TimerSource.build(config: try config("every: 1h\ntopic: metrics\nemit: stats"), context: context)
        let task = Task { try await source.run() }
        let events = await context.waitForEvents(1)
        task.cancel()
        #expect(events.first?.data == ["connections": 7])
        #expect(events.first?.type == "metrics")
    }

    @Test func validatesItsConfig() {
        #expect(throws: ConfigurationError.self) { try config("every: 2s\ntopic: t\nemit: http") }
        #expect(throws: ConfigurationError.self) { try config("every: 2s\ntopic: t\nemit: http\nurl: ftp://x") }
        #expect(throws: ConfigurationError.self) { try config("every: 2s\ntopic: t\nurl: http://x") }
        #expect(throws: ConfigurationError.self) { try config("every: 2s\ntopic: \"a*\"") }
        do {
            _ = try config("every: 2s\ntopic: t\nemit: stat")
            Issue.record("expected an error")
        } catch let error as ConfigurationError {
            #expect(error.diagnostics.map(\.description) == [
                "<plugin>:3:7: emit (timer): expected 'stats', 'static' or 'http', got 'stat' (did you mean 'stats'?)"
            ])
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test func unreachableURLReportsRetryingAndKeepsRunning() async throws {
        let context = RecordingSourceContext()
        let source = try await TimerSource.build(
            config: try config("every: 50ms\ntopic: t\nemit: http\nurl: http://127.0.0.1:1/status\ntimeout: 500ms"),
            context: context
        )
        let task = Task { try await source.run() }
        let deadline = ContinuousClock.now + .seconds(20)  // a bound for slow (sanitized) runs
        while context.healthReports.count < 2 && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        task.cancel()
        #expect(context.healthReports.count >= 2)
        if case .retrying(let error)? = context.healthReports.first {
            #expect(!error.isEmpty)
        } else {
            Issue.record("expected a retrying report, got \(context.healthReports)")
        }
        #expect(context.events.isEmpty)
    }
}
