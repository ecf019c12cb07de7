import Foundation
import NIOConcurrencyHelpers
import NIOSSL
import Synchronization
import SwitchboardConfig
import SwitchboardCore

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

