import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import ServiceLifecycle
import Synchronization
import SwitchboardConfig
import SwitchboardCore
import SwitchboardKernel
import UnixSignals


/// Where the shutdown drain is: not started, pacing closes, or hurried by a second signal.
final class DrainState: Sendable {
    private let started = Atomic<Bool>(false)
    private let hurried = Atomic<Bool>(false)

    /// Marks the drain as started; `false` if it already was.
    func start() -> Bool {
        started.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged
    }

    var hasStarted: Bool { started.load(ordering: .relaxed) }

    /// A second signal: close whatever is left at once.
    func hurry() { hurried.store(true, ordering: .relaxed) }

    var isHurried: Bool { hurried.load(ordering: .relaxed) }
}

/// Reload results, for `/stats` and `/metrics`.
final class ReloadCounters: Sendable {
    let applied = Atomic<Int>(0)
    let rejected = Atomic<Int>(0)
    /// Milliseconds since the epoch of the last reload that applied, 0 before any.
    let lastAppliedAt = Atomic<Int64>(0)
    /// Whether a reload is running (one at a time).
    let running = Atomic<Bool>(false)
}

/// The TLS context new connections get; a reload reads the certificate and key again and
/// swaps it (connections already open keep theirs).
final class TLSContextBox: Sendable {
    private let context: NIOLockedValueBox<NIOSSLContext>

    init(configuration: ListenerTLSConfiguration) throws {
        context = NIOLockedValueBox(try Self.makeContext(configuration))
    }

    var current: NIOSSLContext { context.withLockedValue { $0 } }

    /// Installs a context made from `configuration` (by ``makeContext(_:)``, at reload).
    func install(_ made: NIOSSLContext, files configuration: ListenerTLSConfiguration) {
        context.withLockedValue { $0 = made }
    }

    /// TLS 1.2 and newer, NIOSSL's default (modern) cipher suites, HTTP/1.1 by ALPN.
    static func makeContext(_ configuration: ListenerTLSConfiguration) throws -> NIOSSLContext {
        let chain: [NIOSSLCertificate]
        let key: NIOSSLPrivateKey
        do {
            chain = try NIOSSLCertificate.fromPEMFile(configuration.certificate)
        } catch {
            throw TLSSetupError("cannot load the TLS certificate '\(configuration.certificate)': \(error)")
        }
        guard !chain.isEmpty else { throw TLSSetupError("the TLS certificate file '\(configuration.certificate)' holds no PEM certificate") }
        do {
            key = try NIOSSLPrivateKey(file: configuration.key, format: .pem)
        } catch {
            throw TLSSetupError("cannot load the TLS key '\(configuration.key)': \(error)")
        }
        var tls = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        tls.minimumTLSVersion = .tlsv12
        tls.applicationProtocols = ["http/1.1"]
        do {
            return try NIOSSLContext(configuration: tls)
        } catch {
            throw TLSSetupError("the TLS certificate and key do not work together: \(error)")
        }
    }
}

struct TLSSetupError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

// MARK: running, draining, stopping

extension Gateway {
    /// Runs until SIGINT/SIGTERM (when `handleSignals`) or ``shutdown()``: stops accepting,
    /// closes WebSocket clients with 1001 spread over `shutdown.drain`, stops sources, then
    /// returns. SIGHUP reloads the configuration.
    public func run(handleSignals: Bool = true, onRunning: (@Sendable (Int) async -> Void)? = nil) async throws {
        assembly.statsProvider.set { [self] in await self.statsSnapshot() }
        let router = Router(context: GatewayRequestContext.self)
        addRoutes(to: router)

        let endpoints = self.endpoints
        let kernel = assembly.kernel
        let logger = self.logger
        let listenerConfiguration = configuration.listener
        let limits = GatewayChildChannel.ListenerLimits(
            connections: connectionLimiter,
            handshakeTimeout: TimeAmount(listenerConfiguration.handshakeTimeout.duration),
            idleTimeout: listenerConfiguration.idleTimeout,
            maxHeaderSize: listenerConfiguration.maxHeaderSize.bytes,
            refusals: listenerRefusals
        )
        let tls = self.tls
        let server = HTTPServerBuilder { responder in
            GatewayChildChannel(responder: responder, endpoints: endpoints, kernel: kernel, limits: limits, tls: tls, logger: logger)
        }
        let listener = listenerConfiguration
        let application = Application(
            responder: GatewayResponder(fixed: router.buildResponder(), gateway: self),
            server: server,
            // The kernel caps the backlog at net.core.somaxconn; Hummingbird's 256 overflowed
            // under reconnect bursts (clients then wait for SYN retries).
            configuration: .init(address: .hostname(listener.host, port: listener.port), serverName: nil, backlog: 4096),
            onServerRunning: { [self] channel in
                let port = channel.localAddress?.port ?? listener.port
                self.boundPort.withLockedValue { $0 = port }
                self.residentAtStart.store(Self.residentMemoryBytes() ?? 0, ordering: .relaxed)
                let displayHost = listener.host == "0.0.0.0" || listener.host == "::" ? "localhost" : listener.host
                let scheme = tls == nil ? "" : "s"
                let base = "http\(scheme)://\(displayHost):\(port)"
                logger.info("switchboard listening", metadata: [
                    "address": .string("\(listener.host):\(port)"),
                    "endpoints": .string(endpoints.all.keys.sorted().map { "ws\(scheme)://\(displayHost):\(port)\($0)" }.joined(separator: " ")),
                ])
                let (routes, dashboard) = self.live.withLockedValue { ($0.sourceRoutes.values.flatMap { $0 }, $0.configuration.dashboard) }
                if dashboard.enabled { logger.notice("dashboard: \(base)\(dashboard.path)") }
                for route in routes {
                    if let announcement = route.announcement?(base) {
                        for line in announcement.split(separator: "\n") { logger.notice("\(line)") }
                    }
                }
                await onRunning?(port)
            },
            eventLoopGroupProvider: .shared(eventLoopGroup),
            logger: logger
        )
        // Sources run outside the service group: they stop last, after the drain, while the
        // HTTP server stops first (its end does not wait for WebSocket connections).
        for (name, source) in initialSources { sourceRunner.start(name: name, source: source) }
        let group = ServiceGroup(configuration: .init(services: [.init(service: application)], logger: logger))
        serviceGroup.withLockedValue { $0 = group }
        // `shutdown()` may have run before the group existed: the group remembers the request.
        if drain.hasStarted { await group.triggerGracefulShutdown() }
        let limiter = connectionLimiter
        let trimmer = MemoryTrimmer(on: eventLoopGroup.next()) { limiter.openConnections }
        defer { trimmer.cancel() }
        let signals = handleSignals ? Task { await self.handleSignals() } : nil
        defer { signals?.cancel() }
        var failure: (any Error)?
        do { try await group.run() } catch { failure = error }
        // Also when the server ended on its own: its clients are closed before the sources.
        await shutdown()
        await sourceRunner.stopAll()
        logger.info("switchboard stopped")
        if let failure { throw failure }
    }

    /// SIGTERM and SIGINT drain (a second one ends at once); SIGHUP reloads.
    private func handleSignals() async {
        let signals = await UnixSignalsSequence(trapping: .sigterm, .sigint, .sighup)
        for await signal in signals {
            switch signal {
            case .sighup:
                Task { _ = await self.reload(trigger: "SIGHUP") }
            default:
                if drain.start() {
                    Task { await self.shutdown() }
                } else {
                    logger.notice("second signal: closing every connection now", metadata: ["signal": "\(signal)"])
                    drain.hurry()
                }
            }
        }
    }

    /// WebSocket connections are not tasks of the HTTP server, so its end does not wait for
    /// them: wait here until the closed clients have answered the 1001 close (or the close
    /// timeout has closed them), at most `shutdown.grace` plus a second.
    /// A second signal during the wait shortens it to half a second from then.
    private func waitForWebSocketClients() async {
        let start = ContinuousClock.now
        let patient = start + configuration.shutdownGrace.duration + .seconds(1)
        var hurriedLimit: ContinuousClock.Instant? = drain.isHurried ? start + .milliseconds(500) : nil
        while endpoints.all.values.contains(where: { $0.connections.load(ordering: .relaxed) > 0 }) {
            let now = ContinuousClock.now
            if hurriedLimit == nil && drain.isHurried { hurriedLimit = now + .milliseconds(500) }
            if now >= min(patient, hurriedLimit ?? patient) { return }
            try? await Task.sleep(for: .milliseconds(10))
        }
    }

    /// Shuts a running gateway down as SIGTERM does: stops accepting (the listening socket
    /// closes, upgrade requests still arriving get 503, and a connection whose filters finish
    /// after the drain began is closed with 1001 at once), closes WebSocket clients with 1001
    /// spread over `shutdown.drain` while deliveries continue to the rest, and waits for
    /// them; ``run(handleSignals:onRunning:)`` then stops the sources and returns. Every
    /// caller waits for the same drain.
    public func shutdown() async {
        let task = drainTask.withLockedValue { task in
            if task == nil { task = Task { await self.drainClients() } }
            return task
        }
        await task?.value
    }

    private func drainClients() async {
        _ = drain.start()
        endpoints.draining.store(true, ordering: .relaxed)
        let group = serviceGroup.withLockedValue { $0 }
        await group?.triggerGracefulShutdown()
        let settings = configuration.shutdown
        let open = endpoints.all.values.flatMap { $0.open.all }
        logger.notice("draining", metadata: ["clients": "\(open.count)", "window": "\(settings.drain)"])
        await closePaced(open, over: settings.drain.duration, jitter: settings.reconnectJitter.duration, reason: "server shutting down")
        // Connections that were being accepted while the drain started.
        for runtime in endpoints.all.values { runtime.open.send(.close(code: 1001, reason: "server shutting down")) }
        await waitForWebSocketClients()
    }

    /// Closes `connections` with 1001 one after another, evenly over `window`, each reason
    /// carrying a random reconnect delay up to `jitter` (`; reconnect_after_ms=N`). A
    /// second shutdown signal (``DrainState/hurry()``) closes the rest at once.
    func closePaced(_ connections: [OpenConnection], over window: Duration, jitter: Duration, reason: String) async {
        let connections = connections.shuffled()
        guard !connections.isEmpty else { return }
        let start = ContinuousClock.now
        let jitterMilliseconds = max(0, Int(jitter.components.seconds * 1000 + jitter.components.attoseconds / 1_000_000_000_000_000))
        var next = 0
        while next < connections.count {
            let elapsed = ContinuousClock.now - start
            // Connections due by now: the i-th at window × i / n.
            var due = connections.count
            if !drain.isHurried && window > .zero {
                due = min(connections.count, Int((elapsed / window) * Double(connections.count)) + 1)
            }
            while next < due {
                let delay = Int.random(in: 0...jitterMilliseconds)
                connections[next].send(.close(code: 1001, reason: "\(reason); reconnect_after_ms=\(delay)"))
                next += 1
            }
            if next < connections.count { try? await Task.sleep(for: .milliseconds(5)) }
        }
    }
}
