import Foundation

/// A real PostgreSQL server (Debian: `postgresql`, version 15) on a free loopback port with a
/// throwaway data directory (`initdb`, trust authentication, superuser `postgres`), for tests.
/// `stop()` shuts it down, `start()` brings it back on the same port with the same data.
///
/// PostgreSQL refuses to run as root: as root, the server and `initdb` run as the `postgres`
/// user (through `setpriv`, else `runuser`) and the directory is handed over to it. SQL and
/// NOTIFY go through `psql` over TCP, so this helper needs no PostgreSQL client library.
public final class TestPostgresServer: @unchecked Sendable {
    public let port: Int
    /// Holds `data/` (the cluster), the server's Unix socket and `postgres.log`.
    public let directory: URL
    private let tools: Tools
    private var process: Process?

    /// How ``stop(_:)`` shuts the server down.
    public enum Shutdown: Sendable {
        /// SIGQUIT: every connection drops at once, as in a crash (recovery runs at the next start).
        case immediate
        /// SIGINT: sessions end with FATAL "terminating connection due to administrator command".
        case fast
    }

    struct Tools: Sendable {
        var initdb: String
        var postgres: String
        var psql: String
    }

    /// Whether `initdb`, `postgres` and `psql` were found (CI installs them: tests fail without).
    public static var isAvailable: Bool { locatedTools != nil }

    /// `initdb` and `postgres` from the first directory that has both: `PATH`,
    /// `/usr/lib/postgresql/15/bin`, `/usr/local/bin`, then any other installed version.
    static let locatedTools: Tools? = {
        let files = FileManager.default
        let path = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init)
        let versions = ((try? files.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? [])
            .sorted { (Int($0) ?? 0) > (Int($1) ?? 0) }
            .map { "/usr/lib/postgresql/\($0)/bin" }
        let candidates = path + ["/usr/lib/postgresql/15/bin", "/usr/local/bin"] + versions
        guard let binaries = candidates.first(where: { files.isExecutableFile(atPath: "\($0)/initdb") && files.isExecutableFile(atPath: "\($0)/postgres") }) else {
            return nil
        }
        // /usr/local/bin/postgres may be a link into /usr/lib/postgresql/15/bin, whose psql matches it.
        let serverDirectory = URL(fileURLWithPath: "\(binaries)/postgres").resolvingSymlinksInPath().deletingLastPathComponent().path
        let psql = ([binaries, serverDirectory] + path + ["/usr/bin"]).map { "\($0)/psql" }.first { files.isExecutableFile(atPath: $0) }
        guard let psql else { return nil }
        return Tools(initdb: "\(binaries)/initdb", postgres: "\(binaries)/postgres", psql: psql)
    }()

    var dataDirectory: URL { directory.appendingPathComponent("data") }
    var logFile: URL { directory.appendingPathComponent("postgres.log") }

    /// Creates a cluster in a fresh directory and starts the server on a free port.
    public init() async throws {
        guard let tools = Self.locatedTools else {
            throw TestPostgresError(
                "PostgreSQL is not installed (apt install postgresql): no initdb and postgres on PATH, in /usr/lib/postgresql/15/bin or /usr/local/bin, or no psql"
            )
        }
        self.tools = tools
        port = try TestRedisServer.freePort()
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("postgres-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try Self.handOverToServerUser(directory)
        let (initdb, arguments) = try Self.asServerUser(
            tools.initdb, ["-D", dataDirectory.path, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync"]
        )
        let (status, output) = try await Self.runTool(initdb, arguments, in: directory)
        guard status == 0 else { throw TestPostgresError("initdb failed with status \(status): \(output)") }
        try await start()
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(at: directory)
    }

    /// Starts (or restarts) the server and waits until it answers a query over TCP (20 s at most).
    public func start() async throws {
        if let process, process.isRunning { return }
        let (executable, arguments) = try Self.asServerUser(tools.postgres, [
            "-D", dataDirectory.path, "-p", String(port), "-k", directory.path,
            "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
        ])
        if !FileManager.default.fileExists(atPath: logFile.path) {
            FileManager.default.createFile(atPath: logFile.path, contents: nil)
        }
        guard let log = FileHandle(forWritingAtPath: logFile.path) else { throw TestPostgresError("cannot write \(logFile.path)") }
        _ = try? log.seekToEnd()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.currentDirectoryURL = directory  // the postgres user may not enter ours
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = log
        process.standardError = log
        try process.run()
        self.process = process
        let deadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < deadline {
            guard process.isRunning else {
                self.process = nil
                throw TestPostgresError("postgres exited with status \(process.terminationStatus) on port \(port): \(logTail())")
            }
            if (try? await execute("SELECT 1")) != nil { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        stop()
        throw TestPostgresError("postgres did not accept connections on 127.0.0.1:\(port) within 20 s: \(logTail())")
    }

    /// Shuts the server down and waits for it to exit (10 s, then SIGKILL). The data stays.
    public func stop(_ mode: Shutdown = .immediate) {
        guard let process else { return }
        self.process = nil
        guard process.isRunning else { return }  // exited by itself: its pid may be reused
        // Started through runuser: the server is its child, named in postmaster.pid.
        var target = process.processIdentifier
        if process.executableURL?.lastPathComponent == "runuser",
            let text = try? String(contentsOf: dataDirectory.appendingPathComponent("postmaster.pid"), encoding: .utf8),
            let line = text.split(separator: "\n").first, let pid = Int32(line.trimmingCharacters(in: .whitespaces))
        {
            target = pid
        }
        kill(target, mode == .fast ? SIGINT : SIGQUIT)
        let deadline = ContinuousClock.now + .seconds(10)
        while process.isRunning && ContinuousClock.now < deadline { usleep(10_000) }
        if process.isRunning {
            kill(target, SIGKILL)
            kill(process.processIdentifier, SIGKILL)
        }
        process.waitUntilExit()
    }

    /// Runs `sql` with psql as `postgres` over TCP and returns its unaligned, trimmed output;
    /// throws with psql's message when it fails.
    @discardableResult
    public func execute(_ sql: String, database: String = "postgres") async throws -> String {
        let (status, output) = try await Self.runTool(tools.psql, [
            "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", String(port), "-U", "postgres", "-d", database,
            "-c", sql,
        ])
        guard status == 0 else { throw TestPostgresError("psql failed with status \(status): \(output)") }
        return output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Sends `payload` on `channel` with `pg_notify`: the channel is taken as written, case and
    /// all (as LISTEN "channel" expects), where an unquoted `NOTIFY Name` would mean `name`.
    public func notify(_ channel: String, _ payload: String) async throws {
        try await execute("SELECT pg_notify(\(Self.literal(channel)), \(Self.literal(payload)))")
    }

    /// Client sessions open on the server, not counting the one asking.
    public func clientSessions() async throws -> Int {
        let count = try await execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")
        return Int(count.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
    }

    /// A SQL string literal (standard_conforming_strings is on: only `'` needs doubling).
    public static func literal(_ text: String) -> String {
        "'" + text.replacingOccurrences(of: "'", with: "''") + "'"
    }

    /// The end of the server's log, for error messages.
    func logTail() -> String {
        let text = (try? String(contentsOf: logFile, encoding: .utf8)) ?? ""
        return String(text.suffix(2000))
    }

    // MARK: processes

    /// `executable arguments` as run by the `postgres` user when this process is root.
    static func asServerUser(_ executable: String, _ arguments: [String]) throws -> (String, [String]) {
        guard getuid() == 0 else { return (executable, arguments) }
        let files = FileManager.default
        // setpriv execs the server itself, so the process started is the one to signal.
        if let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"].first(where: { files.isExecutableFile(atPath: $0) }) {
            return (setpriv, ["--reuid=postgres", "--regid=postgres", "--init-groups", "--", executable] + arguments)
        }
        if let runuser = ["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"].first(where: { files.isExecutableFile(atPath: $0) }) {
            return (runuser, ["-u", "postgres", "--", executable] + arguments)
        }
        throw TestPostgresError("running as root: PostgreSQL must run as the postgres user, but neither setpriv nor runuser is installed")
    }

    /// As root, gives `directory` to the `postgres` user (initdb and the server write into it).
    static func handOverToServerUser(_ directory: URL) throws {
        guard getuid() == 0 else { return }
        guard let user = getpwnam("postgres") else {
            throw TestPostgresError("running as root and there is no postgres user to run PostgreSQL as (apt install postgresql creates it)")
        }
        guard chown(directory.path, user.pointee.pw_uid, user.pointee.pw_gid) == 0, chmod(directory.path, 0o700) == 0 else {
            throw TestPostgresError("cannot hand \(directory.path) over to the postgres user (errno \(errno))")
        }
    }

    /// Runs a tool to completion without blocking a thread, its output (stdout and stderr)
    /// collected in a file so a chatty tool cannot fill a pipe and stall. `directory`: its
    /// working directory (PostgreSQL's tools fail in one the postgres user cannot enter).
    static func runTool(_ executable: String, _ arguments: [String], in directory: URL? = nil) async throws -> (status: Int32, output: String) {
        let outputFile = FileManager.default.temporaryDirectory.appendingPathComponent("pg-tool-\(UUID().uuidString).log")
        FileManager.default.createFile(atPath: outputFile.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: outputFile) }
        guard let output = FileHandle(forWritingAtPath: outputFile.path) else { throw TestPostgresError("cannot write \(outputFile.path)") }
        defer { try? output.close() }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let directory { process.currentDirectoryURL = directory }
        var environment = ProcessInfo.processInfo.environment
        environment["PGCONNECT_TIMEOUT"] = "5"
        process.environment = environment
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = output
        process.standardError = output
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            process.terminationHandler = { _ in continuation.resume() }
            do {
                try process.run()
            } catch {
                process.terminationHandler = nil
                continuation.resume(throwing: error)
            }
        }
        let text = (try? String(contentsOf: outputFile, encoding: .utf8)) ?? ""
        return (process.terminationStatus, text)
    }
}

public struct TestPostgresError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
