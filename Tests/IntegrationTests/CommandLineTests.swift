import AsyncHTTPClient
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import Testing

/// Runs the real `switchboard` executable built next to the test bundle.
@Suite struct CommandLineTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static var executable: URL {
        let besideTests = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("switchboard")
        if FileManager.default.isExecutableFile(atPath: besideTests.path) { return besideTests }
        return repository.appendingPathComponent(".build/debug/switchboard")
    }

    /// Runs to completion; returns exit status and combined output.
    static func run(_ arguments: [String], environment: [String: String] = [:]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        process.currentDirectoryURL = repository
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    /// `new-plugin` writes the folder, the Package.swift line and the registry lines, refuses
    /// to overwrite or to take a bad name, and writes exactly the code that
    /// Docs/writing-a-plugin.md shows (scripts/scaffold-check.sh builds and runs that code).
    @Test func newPluginWritesWhatTheGuideShowsAndWiresItIn() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("scaffold-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        try FileManager.default.createDirectory(at: root.appendingPathComponent("Sources/SwitchboardPlugins"), withIntermediateDirectories: true)
        for path in ["Package.swift", "Sources/SwitchboardPlugins/BuiltinPlugins.swift"] {
            try FileManager.default.copyItem(at: Self.repository.appendingPathComponent(path), to: root.appendingPathComponent(path))
        }
        for (kind, name) in [("source", "example_ticker"), ("filter", "example_gate"), ("encoder", "example_lines")] {
            let result = try Self.run(["new-plugin", kind, name, "--root", root.path])
            #expect(result.status == 0, "\(result.output)")
        }
        let package = try String(contentsOf: root.appendingPathComponent("Package.swift"), encoding: .utf8)
        #expect(package.contains("        (\"ExampleTicker\", [], []),\n        (\"ExampleGate\", [], []),\n        (\"ExampleLines\", [nio], []),\n    ]"))
        let registry = try String(contentsOf: root.appendingPathComponent("Sources/SwitchboardPlugins/BuiltinPlugins.swift"), encoding: .utf8)
        for line in [
            "import ExampleGatePlugin", "import ExampleLinesPlugin", "import ExampleTickerPlugin",
            "registry.register(source: ExampleTickerSource.self)", "registry.register(filter: ExampleGateFilter.self)",
            "registry.register(encoder: ExampleLinesEncoderPlugin.self)",
        ] {
            #expect(registry.contains(line), "missing: \(line)")
        }

        // The guide's code blocks are the scaffold's output, byte for byte.
        let guide = try String(contentsOf: Self.repository.appendingPathComponent("Docs/writing-a-plugin.md"), encoding: .utf8)
        let marker = "<!-- new-plugin writes "
        var shown = 0
        for part in guide.components(separatedBy: marker).dropFirst() {
            guard let end = part.range(of: " -->\n```swift\n"), let close = part.range(of: "\n```\n", range: end.upperBound..<part.endIndex) else {
                Issue.record("a marked block is not followed by a swift code block")
                continue
            }
            let path = String(part[..<end.lowerBound])
            let block = String(part[end.upperBound..<close.lowerBound]) + "\n"
            let written = try String(contentsOf: root.appendingPathComponent(path), encoding: .utf8)
            #expect(block == written, "Docs/writing-a-plugin.md shows something else than new-plugin writes to \(path)")
            shown += 1
        }
        #expect(shown == 3)

        let again = try Self.run(["new-plugin", "source", "example_ticker", "--root", root.path])
        #expect(again.status != 0 && again.output.contains("Plugins/ExampleTicker already exists"), "\(again.output)")
        let badName = try Self.run(["new-plugin", "filter", "Bad-Name", "--root", root.path])
        #expect(badName.status != 0 && badName.output.contains("snake_case"), "\(badName.output)")
        let builtIn = try Self.run(["new-plugin", "encoder", "json", "--root", root.path])
        #expect(builtIn.status != 0 && builtIn.output.contains("already a built-in plugin's name"), "\(builtIn.output)")
        let notACheckout = try Self.run(["new-plugin", "filter", "fine", "--root", root.appendingPathComponent("Plugins").path])
        #expect(notACheckout.status != 0 && notACheckout.output.contains("not a Switchboard checkout"), "\(notACheckout.output)")
    }

    @Test func checkAcceptsEveryShippedConfig() throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: Self.repository.appendingPathComponent("configs").path)
            .filter { $0.hasSuffix(".yaml") }.sorted().map { "configs/\($0)" }
        let result = try Self.run(["check"] + files, environment: [
            "TAKHIN_EVENTS_KEY": "example-key-0123456789abcdef",
            "HELIOS_EVENTS_KEY": "example-key-0123456789abcdef",
            "HELIOS_JWT_SECRET": "example-secret-0123456789abcdef0123456789",
        ])
        #expect(result.status == 0, "\(result.output)")
        #expect(result.output.contains("configs/default.yaml: ok"))
    }

    @Test func checkPrintsEveryErrorWithPositionAndFails() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("broken-\(UUID().uuidString).yaml")
        try """
            listener:
              port: 99999
            sources:
              - plugin: timer
                every: soon
                topic: metrics
            endpoints:
              - path: /ws
                encoders: [jason]
            """.write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        let result = try Self.run(["check", file.path])
        #expect(result.status == 1)
        let lines = result.output.split(separator: "\n").map(String.init)
        #expect(lines == [
            "\(file.path):2:9: listener.port: port 99999 is out of range (use 1–65535, or 0 for any free port)",
            "\(file.path):5:12: sources[0].every (timer): expected a duration such as 500ms, 2s, 1m or 1h, got 'soon' (units: ms, s, m, h; a plain number means seconds)",
            "\(file.path):9:15: endpoints[0].encoders: unknown encoder 'jason' (did you mean 'json'? available: json, msgpack)",
        ])
    }

    /// Validating in CI without the secrets: an unset variable is the one error, never also
    /// what follows from it; `--allow-unset` turns it into a warning; `--env-file` supplies it.
    @Test func checkWithoutSecrets() throws {
        let strict = try Self.run(["check", "configs/helios-cluster.yaml"])
        #expect(strict.status == 1)
        let strictLines = strict.output.split(separator: "\n").map(String.init)
        #expect(strictLines.count == 2, "\(strict.output)")
        #expect(strictLines.allSatisfy { $0.contains("is not set") }, "\(strict.output)")
        #expect(!strict.output.contains("no API key configured"))
        #expect(!strict.output.contains("at least 32 bytes"))

        let lenient = try Self.run(["check", "--allow-unset", "configs/helios-cluster.yaml"])
        #expect(lenient.status == 0, "\(lenient.output)")
        #expect(lenient.output.contains("warning: environment variable 'HELIOS_EVENTS_KEY' is not set"))
        // What the unset variable may cause is not hidden either: the block is flagged as
        // not fully validated.
        #expect(lenient.output.contains("warning: not fully validated: no API key configured"), "\(lenient.output)")
        #expect(lenient.output.contains("configs/helios-cluster.yaml: ok (4 warnings)"), "\(lenient.output)")

        let file = FileManager.default.temporaryDirectory.appendingPathComponent("ci-\(UUID().uuidString).env")
        try """
            # CI values, not secrets
            export HELIOS_EVENTS_KEY="example-key-0123456789abcdef"
            HELIOS_JWT_SECRET='example-secret-0123456789abcdef0123456789'
            """.write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        let withFile = try Self.run(["check", "--env-file", file.path, "configs/helios-cluster.yaml"])
        #expect(withFile.status == 0, "\(withFile.output)")
        #expect(withFile.output == "configs/helios-cluster.yaml: ok\n")

        // A real error is still an error with --allow-unset.
        let broken = FileManager.default.temporaryDirectory.appendingPathComponent("broken-\(UUID().uuidString).yaml")
        try "endpoints:\n  - path: /ws\n    encoders: [jason]\n    topics: [\"${UNSET_TOPIC_VARIABLE}\"]\n".write(to: broken, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: broken) }
        let mixed = try Self.run(["check", "--allow-unset", broken.path])
        #expect(mixed.status == 1)
        #expect(mixed.output.contains("unknown encoder 'jason'"))
        #expect(mixed.output.contains("warning: environment variable 'UNSET_TOPIC_VARIABLE' is not set"))

        // A plugin block with an unset variable still shows its own validation failure.
        let limited = FileManager.default.temporaryDirectory.appendingPathComponent("limited-\(UUID().uuidString).yaml")
        try """
            endpoints:
              - path: /ws
                encoders: [json]
                filters:
                  - plugin: rate_limit
                    trusted_proxies: ["${UNSET_PROXY_VARIABLE}"]
                    connect_rate: 5
            """.write(to: limited, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: limited) }
        let flagged = try Self.run(["check", "--allow-unset", limited.path])
        #expect(flagged.output.contains("warning: environment variable 'UNSET_PROXY_VARIABLE' is not set"), "\(flagged.output)")
        #expect(flagged.output.contains("warning: not fully validated: invalid CIDR '' in trusted_proxies"), "\(flagged.output)")
        #expect(flagged.status == 0)
    }

    @Test func checkReportsAMissingFile() throws {
        let result = try Self.run(["check", "/nonexistent/switchboard.yaml"])
        #expect(result.status == 1)
        #expect(result.output.contains("/nonexistent/switchboard.yaml:1:1: cannot read file"))
    }

    @Test func runHonoursEnvironmentAndFlagsThenStopsOnSIGTERM() async throws {
        // Environment alone: SWITCHBOARD_HOST / SWITCHBOARD_PORT override the default config.
        let fromEnvironment = try await ServerProcess.start([], environment: ["SWITCHBOARD_HOST": "127.0.0.1", "SWITCHBOARD_PORT": "0"])
        #expect(fromEnvironment.address.hasPrefix("127.0.0.1:"))
        #expect(!fromEnvironment.address.hasSuffix(":8080"))
        let health = try await HTTPClient.shared.execute(HTTPClientRequest(url: "http://\(fromEnvironment.address)/healthz"), timeout: .seconds(5))
        #expect(health.status == .ok)
        #expect(fromEnvironment.output.contains("demo key"))
        #expect(fromEnvironment.output.contains("curl -X POST http://127.0.0.1:"))
        let status = await fromEnvironment.terminate()
        #expect(status == 0)
        #expect(fromEnvironment.output.contains("switchboard stopped"))

        // Flags win over the environment; a configured key is not replaced by a demo key.
        let flagged = try await ServerProcess.start(
            ["run", "configs/default.yaml", "--port", "0", "--host", "127.0.0.1", "--log-level", "debug"],
            environment: ["SWITCHBOARD_PORT": "8080", "SWITCHBOARD_PUBLISH_KEY": "a-configured-key-0123456789"]
        )
        #expect(flagged.address.hasPrefix("127.0.0.1:"))
        #expect(!flagged.address.hasSuffix(":8080"))
        #expect(!flagged.output.contains("demo key"))
        #expect(!flagged.output.contains("a-configured-key-0123456789"))
        #expect(await flagged.terminate() == 0)
    }
}

/// A `switchboard run` child process whose log is collected.
final class ServerProcess: @unchecked Sendable {
    let process = Process()
    private let lock = NIOLock()
    private var collected = ""
    private(set) var address = ""

    var output: String { lock.withLock { collected } }

    static func start(_ arguments: [String], environment: [String: String]) async throws -> ServerProcess {
        let server = ServerProcess()
        server.process.executableURL = CommandLineTests.executable
        server.process.arguments = arguments
        server.process.currentDirectoryURL = CommandLineTests.repository
        var env = ProcessInfo.processInfo.environment
        env["SWITCHBOARD_PUBLISH_KEY"] = nil
        server.process.environment = env.merging(environment) { $1 }
        let pipe = Pipe()
        server.process.standardOutput = pipe
        server.process.standardError = pipe
        pipe.fileHandleForReading.readabilityHandler = { handle in
            let text = String(decoding: handle.availableData, as: UTF8.self)
            server.lock.withLock { server.collected += text }
        }
        try server.process.run()
        let deadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < deadline {
            if let line = server.output.split(separator: "\n").first(where: { $0.contains("switchboard listening") }),
                let range = line.range(of: "address=")
            {
                server.address = String(line[range.upperBound...].prefix { $0 != " " })
                try await Task.sleep(for: .milliseconds(100))
                return server
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        server.process.terminate()
        throw CancellationError()
    }

    /// Sends SIGTERM and waits for the exit status.
    func terminate() async -> Int32 {
        process.terminate()
        let deadline = ContinuousClock.now + .seconds(15)
        while process.isRunning && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(50))
        }
        try? await Task.sleep(for: .milliseconds(100))
        return process.isRunning ? -1 : process.terminationStatus
    }
}
