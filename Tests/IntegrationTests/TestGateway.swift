import AsyncHTTPClient
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import SwitchboardConfig
import SwitchboardCore
import SwitchboardServer
import Testing
import SwitchboardPlugins

/// A gateway running in-process on a free loopback port.
struct TestGateway {
    let gateway: Gateway
    let port: Int
    let task: Task<Void, any Error>
    /// What ``reload(_:)`` makes the gateway read next.
    let nextConfiguration: NIOLockedValueBox<String>

    static let publishKey = "test-publish-key-0123456789abcdef"
    /// The admin key every test gateway has; ``get(_:admin:)`` sends it by default.
    static let adminKey = "test-admin-key-0123456789abcdef"

    /// Loads `yaml` (with `SWITCHBOARD_PUBLISH_KEY` set to ``publishKey``), binds 127.0.0.1:0 and waits until it listens.
    static func start(_ yaml: String, environment: [String: String] = [:]) async throws -> TestGateway {
        var env = ["SWITCHBOARD_PUBLISH_KEY": publishKey]
        env.merge(environment) { $1 }
        let loader = ConfigurationLoader(registry: BuiltinPlugins.registry, environment: env)
        let nextConfiguration = NIOLockedValueBox(yaml)
        let read = { @Sendable () throws(ConfigurationError) -> GatewayConfiguration in
            var configuration = try loader.load(yaml: nextConfiguration.withLockedValue { $0 }, file: "test.yaml")
            configuration.listener.host = "127.0.0.1"
            configuration.listener.port = 0
            if configuration.adminKey == nil { configuration.adminKey = adminKey }
            return configuration
        }
        let configuration = try read()
        var logger = Logger(label: "test-gateway")
        logger.logLevel = .warning
        let gateway = try await Gateway.make(configuration: configuration, registry: BuiltinPlugins.registry, logger: logger, reload: read)
        let (ports, continuation) = AsyncStream<Int>.makeStream()
        let task = Task {
            try await gateway.run(handleSignals: false) { port in continuation.yield(port) }
        }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next() else { throw CancellationError() }
        return TestGateway(gateway: gateway, port: port, task: task, nextConfiguration: nextConfiguration)
    }

    /// Shuts down gracefully and waits for the run loop to return.
    func stop() async {
        await gateway.shutdown()
        _ = try? await task.value
    }

    /// Reloads the gateway with `yaml` (the same environment and overrides as at start).
    func reload(_ yaml: String) async -> Gateway.ReloadOutcome {
        nextConfiguration.withLockedValue { $0 = yaml }
        return await gateway.reload(trigger: "test")
    }

    var baseURL: String { "http://127.0.0.1:\(port)" }

    /// GET `path` (with the admin key unless `admin` is false); returns status and parsed JSON body.
    func get(_ path: String, admin: Bool = true) async throws -> (status: Int, body: JSONValue) {
        var request = HTTPClientRequest(url: baseURL + path)
        if admin { request.headers.add(name: "X-Admin-Key", value: Self.adminKey) }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(5))
        let body = try await response.body.collect(upTo: 1 << 20)
        return (Int(response.status.code), (try? JSONParser.parse(body.readableBytesView)) ?? .null)
    }

    /// GET `path` as text.
    func text(_ path: String) async throws -> String {
        let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: baseURL + path), timeout: .seconds(5))
        return String(buffer: try await response.body.collect(upTo: 1 << 20))
    }

    /// POST a body to `path` with the test publish key (unless `key` says otherwise).
    func post(_ path: String, body: String, key: String? = TestGateway.publishKey) async throws -> (status: Int, body: JSONValue) {
        var request = HTTPClientRequest(url: baseURL + path)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        if let key { request.headers.add(name: "X-API-Key", value: key) }
        request.body = .bytes(ByteBuffer(string: body))
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(5))
        let bytes = try await response.body.collect(upTo: 1 << 20)
        return (Int(response.status.code), (try? JSONParser.parse(bytes.readableBytesView)) ?? .null)
    }
}

extension String {
    /// Parses the string as JSON (test convenience).
    var json: JSONValue { (try? JSONParser.parse(self)) ?? .null }
}
