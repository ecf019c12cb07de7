import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SwitchboardCore
import Testing

/// `switchboard tail` and `switchboard publish` against a real `switchboard run` child process.
@Suite(.serialized) struct TailPublishCommandTests {
    static let key = "tail-test-key-0123456789abcdef"

    /// A webhook with a key; `/ws` offers both encoders with compression (every message
    /// compressed) and pings every 250 ms, so a client that does not answer pings is cut off.
    static let config = """
        shutdown:
          drain: 0s
        sources:
          - name: publish
            plugin: webhook
            path: /api/publish
            keys: ["\(key)"]
        endpoints:
          - path: /ws
            encoders: [json, msgpack]
            compression: {mode: shared, min_size: 0}
            heartbeat: {interval: 250ms, timeout: 1s}
          - path: /plain
        """

    /// Data with a non-ASCII string, 2^40, a float, nesting and the empty containers.
    static let data = #"{"text":"héllo ✓ 🚀 日本","big":1099511627776,"neg":-7,"ratio":2.5,"list":[1,"two",true,null],"empty":{},"none":[]}"#

    /// Starts the gateway on a free loopback port with ``config``.
    static func startGateway() async throws -> (server: ServerProcess, directory: URL) {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tail-publish-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let file = directory.appendingPathComponent("gateway.yaml")
        try config.write(to: file, atomically: true, encoding: .utf8)
        do {
            let server = try await ServerProcess.start(["run", file.path, "--host", "127.0.0.1", "--port", "0"], environment: [:])
            return (server, directory)
        } catch {
            try? FileManager.default.removeItem(at: directory)
            throw error
        }
    }

    static func publish(_ address: String, _ topic: String, _ json: String, _ options: [String] = [], environment: [String: String] = [:]) throws -> (status: Int32, output: String) {
        try CommandLineTests.run(["publish", "http://\(address)/api/publish", topic, json] + options, environment: environment)
    }

    @Test func publishedEventReachesTailAsJSONRawAndPretty() async throws {
        let (server, directory) = try await Self.startGateway()
        defer {
            if server.process.isRunning { server.process.terminate() }
            try? FileManager.default.removeItem(at: directory)
        }
        let common = ["ws://\(server.address)/ws", "--topic", "orders:42", "--count", "1", "--timeout", "10s"]
        let raw = try TailProcess.start(common + ["--raw"])
        defer { raw.kill() }
        let pretty = try TailProcess.start(common)
        defer { pretty.kill() }
        let rawSubscribed = await raw.waitForStdout { $0.contains(#""type":"subscribed""#) }
        #expect(rawSubscribed, "\(raw.stderr)")
        let prettySubscribed = await pretty.waitForStdout { $0.contains(#""type": "subscribed""#) }
        #expect(prettySubscribed, "\(pretty.stderr)")
        // Several heartbeat pings go by: the connections stay up only if tail answers them.
        try await Task.sleep(for: .seconds(2))

        let published = try Self.publish(server.address, "orders:42", Self.data, ["--key", Self.key, "--type", "order.updated", "--id", "evt-1"])
        #expect(published.status == 0, "\(published.output)")
        #expect(published.output.contains(#"{"accepted":1}"#))

        let rawStatus = await raw.waitForExit()
        #expect(rawStatus == 0, "\(raw.stderr)")
        let lines = raw.stdout.split(separator: "\n").map(String.init)
        #expect(lines.count == 2, "\(raw.stdout)")  // the subscribed reply, then the one event
        let event = (lines.last ?? "").json
        #expect(event.objectValue?.keys == ["type", "topic", "id", "timestamp", "data"])
        #expect(event["type"] == "order.updated")
        #expect(event["topic"] == "orders:42")
        #expect(event["id"] == "evt-1")
        #expect(event["data"] == Self.data.json)
        #expect(raw.stderr.contains("connected to ws://\(server.address)/ws (switchboard.json)"), "\(raw.stderr)")

        let prettyStatus = await pretty.waitForExit()
        #expect(prettyStatus == 0, "\(pretty.stderr)")
        let prettyLines = pretty.stdout.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let start = prettyLines.lastIndex(of: "{") ?? 0
        let printed = prettyLines[start...].map { $0.hasPrefix(#"  "timestamp": "#) ? #"  "timestamp": T,"# : $0 }
        #expect(printed == [
            "{",
            #"  "type": "order.updated","#,
            #"  "topic": "orders:42","#,
            #"  "id": "evt-1","#,
            #"  "timestamp": T,"#,
            #"  "data": {"#,
            #"    "text": "héllo ✓ 🚀 日本","#,
            #"    "big": 1099511627776,"#,
            #"    "neg": -7,"#,
            #"    "ratio": 2.5,"#,
            #"    "list": ["#,
            "      1,",
            #"      "two","#,
            "      true,",
            "      null",
            "    ],",
            #"    "empty": {},"#,
            #"    "none": []"#,
            "  }",
            "}",
            "",
        ])
    }

    @Test func messagePackWithDeflateRoundTripsTheData() async throws {
        let (server, directory) = try await Self.startGateway()
        defer {
            if server.process.isRunning { server.process.terminate() }
            try? FileManager.default.removeItem(at: directory)
        }
        let tail = try TailProcess.start([
            "ws://\(server.address)/ws", "--topic", "feed:unicode", "--format", "msgpack", "--deflate",
            "--count", "1", "--raw", "--timeout", "10s",
        ])
        defer { tail.kill() }
        let tailSubscribed = await tail.waitForStdout { $0.contains(#""type":"subscribed""#) }
        #expect(tailSubscribed, "\(tail.stderr)")
        #expect(tail.stderr.contains("switchboard.msgpack"), "\(tail.stderr)")
        #expect(tail.stderr.contains("permessage-deflate"), "\(tail.stderr)")

        // The key from the environment this time.
        let published = try Self.publish(server.address, "feed:unicode", Self.data, environment: ["SWITCHBOARD_PUBLISH_KEY": Self.key])
        #expect(published.status == 0, "\(published.output)")

        let tailStatus = await tail.waitForExit()
        #expect(tailStatus == 0, "\(tail.stderr)")
        let lines = tail.stdout.split(separator: "\n").map(String.init)
        #expect(lines.count == 2, "\(tail.stdout)")
        let event = (lines.last ?? "").json
        #expect(event["type"] == "message")
        #expect(event["topic"] == "feed:unicode")
        #expect(event["data"] == Self.data.json)
        #expect(event["data"]?["text"] == "héllo ✓ 🚀 日本")
        #expect(event["data"]?["big"] == .int(1 << 40))
    }

    @Test func refusalsExitOneWithTheStatusAndBody() async throws {
        let (server, directory) = try await Self.startGateway()
        defer {
            if server.process.isRunning { server.process.terminate() }
            try? FileManager.default.removeItem(at: directory)
        }
        let missing = try CommandLineTests.run(["tail", "ws://\(server.address)/nope", "--timeout", "10s"])
        #expect(missing.status == 1, "\(missing.output)")
        #expect(missing.output.contains("HTTP 404"), "\(missing.output)")
        #expect(missing.output.contains(#""code":"not_found""#), "\(missing.output)")

        let unsupported = try CommandLineTests.run(["tail", "ws://\(server.address)/plain", "--format", "msgpack", "--timeout", "10s"])
        #expect(unsupported.status == 1, "\(unsupported.output)")
        #expect(unsupported.output.contains("HTTP 400"), "\(unsupported.output)")

        let wrongKey = try Self.publish(server.address, "orders:1", "{}", ["--key", "wrong-key-0123456789abcdef"])
        #expect(wrongKey.status == 1, "\(wrongKey.output)")
        #expect(wrongKey.output.contains("HTTP 401"), "\(wrongKey.output)")
        #expect(wrongKey.output.contains(#""code":"unauthorized""#), "\(wrongKey.output)")

        let refused = try CommandLineTests.run(["tail", "ws://127.0.0.1:1/ws", "--timeout", "10s"])
        #expect(refused.status == 1, "\(refused.output)")
        #expect(refused.output.contains("cannot connect to ws://127.0.0.1:1/ws"), "\(refused.output)")
    }

    @Test func invalidJSONIsRefusedBeforeAnyRequest() async throws {
        // A listener that only counts connections (and never answers).
        let accepted = NIOLockedValueBox(0)
        let listener = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                accepted.withLockedValue { $0 += 1 }
                return channel.eventLoop.makeSucceededVoidFuture()
            }
            .bind(host: "127.0.0.1", port: 0)
            .get()
        defer { listener.close(promise: nil) }
        let address = "127.0.0.1:\(listener.localAddress?.port ?? 0)"

        let invalid = try Self.publish(address, "orders:1", #"{"status": paid}"#, ["--key", Self.key])
        #expect(invalid.status == 1)
        #expect(invalid.output.contains("not valid JSON"), "\(invalid.output)")
        #expect(invalid.output.contains("line 1, column 12"), "\(invalid.output)")
        let bare = try Self.publish(address, "orders:1", "hello", ["--key", Self.key])
        #expect(bare.status == 1)
        #expect(bare.output.contains("a string must be quoted"), "\(bare.output)")
        let acceptedBefore = accepted.withLockedValue { $0 }
        #expect(acceptedBefore == 0)

        // The listener does see a valid publish (which then times out: it never answers).
        let valid = try Self.publish(address, "orders:1", "{}", ["--key", Self.key, "--timeout", "1s"])
        #expect(valid.status == 1)
        let acceptedAfter = accepted.withLockedValue { $0 }
        #expect(acceptedAfter >= 1)
    }

    @Test func gatewayShutdownEndsTailNormallyAndSilenceTimesOut() async throws {
        let (server, directory) = try await Self.startGateway()
        defer {
            if server.process.isRunning { server.process.terminate() }
            try? FileManager.default.removeItem(at: directory)
        }
        let quiet = try TailProcess.start(["ws://\(server.address)/ws", "--topic", "quiet", "--timeout", "1s"])
        defer { quiet.kill() }
        let listening = try TailProcess.start(["ws://\(server.address)/ws", "--topic", "feed:x", "--raw"])
        defer { listening.kill() }

        let quietStatus = await quiet.waitForExit()
        #expect(quietStatus == 1, "\(quiet.stderr)")
        #expect(quiet.stdout.contains(#""type": "subscribed""#), "\(quiet.stdout)")  // a reply is not an event
        #expect(quiet.stderr.contains("no event within 1s"), "\(quiet.stderr)")

        let listeningSubscribed = await listening.waitForStdout { $0.contains(#""type":"subscribed""#) }
        #expect(listeningSubscribed, "\(listening.stderr)")
        let serverStatus = await server.terminate()
        #expect(serverStatus == 0)
        let listeningStatus = await listening.waitForExit()
        #expect(listeningStatus == 0, "\(listening.stderr)")
        #expect(listening.stderr.contains("closed by the gateway: 1001"), "\(listening.stderr)")
    }
}

/// A `switchboard tail` child process; stdout and stderr are collected apart, as bytes (a
/// read may end inside a UTF-8 sequence).
final class TailProcess: @unchecked Sendable {
    let process = Process()
    private let lock = NIOLock()
    private var out = Data()
    private var err = Data()
    private var openStreams = 2

    var stdout: String { lock.withLock { String(decoding: out, as: UTF8.self) } }
    var stderr: String { lock.withLock { String(decoding: err, as: UTF8.self) } }

    static func start(_ arguments: [String]) throws -> TailProcess {
        let tail = TailProcess()
        tail.process.executableURL = CommandLineTests.executable
        tail.process.arguments = ["tail"] + arguments
        tail.process.currentDirectoryURL = CommandLineTests.repository
        let outPipe = Pipe()
        let errPipe = Pipe()
        tail.process.standardOutput = outPipe
        tail.process.standardError = errPipe
        outPipe.fileHandleForReading.readabilityHandler = { handle in tail.collect(handle, error: false) }
        errPipe.fileHandleForReading.readabilityHandler = { handle in tail.collect(handle, error: true) }
        try tail.process.run()
        return tail
    }

    private func collect(_ handle: FileHandle, error: Bool) {
        let data = handle.availableData
        if data.isEmpty {
            handle.readabilityHandler = nil
            lock.withLock { openStreams -= 1 }
            return
        }
        lock.withLock {
            if error { err.append(data) } else { out.append(data) }
        }
    }

    /// Waits until stdout satisfies `condition` (at most `timeout`).
    func waitForStdout(timeout: Duration = .seconds(15), _ condition: (String) -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if condition(stdout) { return true }
            if !process.isRunning { return condition(stdout) }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return false
    }

    /// Waits for the exit and the end of its output (at most `timeout`, then kills it and
    /// returns `nil`).
    func waitForExit(timeout: Duration = .seconds(20)) async -> Int32? {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        if process.isRunning {
            kill()
            return nil
        }
        let drained = ContinuousClock.now + .seconds(2)
        while lock.withLock({ openStreams > 0 }) && ContinuousClock.now < drained {
            try? await Task.sleep(for: .milliseconds(10))
        }
        return process.terminationStatus
    }

    /// Sends SIGTERM if it still runs.
    func kill() {
        if process.isRunning { process.terminate() }
    }
}
