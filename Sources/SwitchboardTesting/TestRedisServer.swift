import Foundation
import NIOCore
import NIOPosix

/// A real `redis-server` on a free loopback port, for tests (Debian: `redis-server`).
/// Persistence is off unless `appendOnly`; `stop()` kills it, `start()` brings it back on
/// the same port.
public final class TestRedisServer: @unchecked Sendable {
    public let port: Int
    public let directory: URL
    private var process: Process?
    private let extraArguments: [String]
    /// With TLS: the CA file clients must trust (the server listens with TLS only).
    public private(set) var caFile: String?

    public var url: String { "redis://127.0.0.1:\(port)" }

    /// Whether redis-server is installed (tests say why they skip otherwise).
    public static var isAvailable: Bool { executable != nil }

    static var executable: String? {
        ["/usr/bin/redis-server", "/usr/local/bin/redis-server"].first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    public init(arguments: [String] = [], tls: Bool = false) async throws {
        port = try Self.freePort()
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("redis-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var arguments = arguments
        if tls {
            try Self.makeCertificates(in: directory)
            caFile = directory.appendingPathComponent("ca.pem").path
            arguments += [
                "--tls-port", String(port), "--tls-cert-file", directory.appendingPathComponent("server.pem").path,
                "--tls-key-file", directory.appendingPathComponent("server.key").path,
                "--tls-ca-cert-file", directory.appendingPathComponent("ca.pem").path, "--tls-auth-clients", "no",
            ]
        }
        extraArguments = arguments
        try await start()
    }

    /// A CA and a server certificate for `localhost` / 127.0.0.1, made with the openssl CLI.
    static func makeCertificates(in directory: URL) throws {
        let script = """
            openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj '/CN=Switchboard test CA' &&
            openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj '/CN=localhost' &&
            printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > ext.cnf &&
            openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile ext.cnf
            """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", script]
        process.currentDirectoryURL = directory
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw TestRedisError("openssl could not make test certificates") }
    }

    /// Starts (or restarts) the server and waits until it answers.
    public func start() async throws {
        guard let executable = Self.executable else { throw TestRedisError("redis-server is not installed (apt install redis-server)") }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = [
            "--port", caFile == nil ? String(port) : "0", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", directory.path, "--daemonize", "no", "--loglevel", "warning",
        ] + extraArguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        self.process = process
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            if caFile != nil {
                // TLS only: the port accepting connections is as far as a raw check goes.
                if (try? await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: port).get().close()) != nil { return }
            } else if (try? await Self.ping(port: port)) == true {
                return
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw TestRedisError("redis-server did not start on port \(port)")
    }

    /// Kills the server (SIGKILL: no goodbye to clients) and waits for it to exit.
    public func stop() {
        guard let process else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        self.process = nil
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(at: directory)
    }

    static func freePort() throws -> Int {
        let channel = try ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).wait()
        defer { try? channel.close().wait() }
        guard let port = channel.localAddress?.port else { throw TestRedisError("no free port") }
        return port
    }

    /// Sends a raw `PING` and checks for `+PONG`.
    static func ping(port: Int) async throws -> Bool {
        let reply = try await command(port: port, "*1\r\n$4\r\nPING\r\n")
        return reply.hasPrefix("+PONG")
    }

    /// Sends raw RESP bytes over a fresh connection and returns what comes back first
    /// (a tiny client independent of the one under test, like redis-cli).
    public static func command(port: Int, _ raw: String) async throws -> String {
        let socket = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel) }
            }
        return try await socket.executeThenClose { inbound, outbound in
            try await outbound.write(ByteBuffer(string: raw))
            for try await chunk in inbound { return String(buffer: chunk) }
            return ""
        }
    }

    /// Runs one command given as words (each sent as a bulk string), like `redis-cli`.
    public func run(_ words: String...) async throws -> String {
        var raw = "*\(words.count)\r\n"
        for word in words { raw += "$\(word.utf8.count)\r\n\(word)\r\n" }
        return try await Self.command(port: port, raw)
    }
}

public struct TestRedisError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
