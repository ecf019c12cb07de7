import SwitchboardCore
import SwitchboardTesting
import Testing

/// The timer's `emit: http` against a real HTTP server (another gateway's health routes).
@Suite struct TimerPollingTests {
    @Test func pollsJSONAndPublishesOnlyChangesWhenAsked() async throws {
        let backend = try await TestGateway.start("endpoints:\n  - path: /ws\n")
        let gateway = try await TestGateway.start(
            """
            sources:
              - name: every-poll
                plugin: timer
                every: 100ms
                topic: health:all
                type: health
                emit: http
                url: http://127.0.0.1:\(backend.port)/healthz
                timeout: 300ms
              - name: changes-only
                plugin: timer
                every: 100ms
                topic: health:changes
                type: health
                emit: http
                url: http://127.0.0.1:\(backend.port)/healthz
                only_changed: true
                timeout: 300ms
            endpoints:
              - path: /all
                subscribe: ["health:all"]
              - path: /changes
                subscribe: ["health:changes"]
            """
        )
        let all = try await TestWebSocketClient.connect(port: gateway.port, path: "/all")
        let changes = try await TestWebSocketClient.connect(port: gateway.port, path: "/changes")

        let polled = [try await all.receiveText().json, try await all.receiveText().json, try await all.receiveText().json]
        #expect(polled.allSatisfy { $0["data"] == ["status": "ok"] && $0["type"] == "health" })

        // The body never changes, so only the first poll after connecting... or none, if the
        // first poll happened before the client subscribed. Either way: at most one event.
        let deadline = ContinuousClock.now + .milliseconds(700)
        var changeEvents = 0
        while ContinuousClock.now < deadline {
            if (try? await changes.receiveText(timeout: .milliseconds(100))) != nil { changeEvents += 1 }
        }
        #expect(changeEvents <= 1)
        #expect((try await gateway.get("/readyz")).status == 200)

        await backend.stop()
        // With the backend gone the poller reports it and readiness drops.
        var readiness = 200
        for _ in 0..<100 where readiness == 200 {
            try await Task.sleep(for: .milliseconds(50))
            readiness = try await gateway.get("/readyz").status
        }
        let afterOutage = try await gateway.get("/readyz").body
        #expect(readiness == 503, "\(afterOutage)")
        let sources = try await gateway.get("/readyz").body["sources"]?.arrayValue ?? []
        #expect(sources.contains { $0["state"] == "retrying" && $0["last_error"]?.stringValue?.isEmpty == false })
        await gateway.stop()
    }
}
