import NIOConcurrencyHelpers
import AsyncHTTPClient
import Foundation
import JWTKit
import Logging
import NIOCore
import NIOHTTP1
import Synchronization
import SwitchboardCore

/// The keys of one issuer: the configured ones plus those of its JWKS, which is fetched at
/// start, every `jwks_refresh`, and again when a token names an unknown `kid` (at most
/// once per `jwks_min_refetch`, so unknown kids cannot make us hammer the issuer).
final class IssuerKeySet: Sendable {
    struct Key: Sendable {
        let kid: String?
        /// Algorithms this key may verify (one for configured keys; for a JWK without
        /// `alg`, those of its key type).
        let algorithms: [JWTAlgorithmName]
        let collection: JWTKeyCollection
    }

    static let maximumJWKSBytes = 1 << 20

    let issuer: String?
    private let config: JWTFilter.IssuerConfig
    private let staticKeys: [Key]
    private let logger: Logger
    private let state = NIOLockedValueBox(State())

    private struct State {
        var jwksKeys: [String: Key] = [:]
        var lastFetch: ContinuousClock.Instant?
        var fetching: Task<Void, Never>?
    }

    init(config: JWTFilter.IssuerConfig, staticKeys: [Key], logger: Logger) {
        self.issuer = config.issuer
        self.config = config
        self.staticKeys = staticKeys
        self.logger = logger
    }

    /// Loads the JWKS file (an error stops the start) or the URL (an error is logged; the
    /// fetch is retried on the next unknown kid and on the refresh schedule).
    func loadInitialJWKS() async throws {
        if let path = config.jwksFile {
            guard let data = FileManager.default.contents(atPath: path) else {
                throw ConfigValidationError("cannot read jwks_file '\(path)'")
            }
            let keys = try await Self.parse(data, logger: logger)
            if keys.isEmpty { throw ConfigValidationError("jwks_file '\(path)' holds no usable keys") }
            state.withLockedValue { $0.jwksKeys = keys }
        }
        if config.jwksURL != nil {
            await refetch(force: true)
            startPeriodicRefresh()
        }
    }

    /// Keys for a token: the key with `kid` (fetching the JWKS again if it is unknown), or
    /// every key of this issuer when the token names none.
    func keys(kid: String?, algorithm: JWTAlgorithmName) async throws -> [Key] {
        guard let kid else {
            return staticKeys + state.withLockedValue { Array($0.jwksKeys.values) }
        }
        if let key = lookup(kid) { return [key] }
        guard config.jwksURL != nil else { return [] }
        await refetch(force: false)
        return lookup(kid).map { [$0] } ?? []
    }

    private func lookup(_ kid: String) -> Key? {
        staticKeys.first { $0.kid == kid } ?? state.withLockedValue { $0.jwksKeys[kid] }
    }

    private func startPeriodicRefresh() {
        let interval = config.jwksRefresh.duration
        Task { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                guard let self else { return }
                await self.refetch(force: true)
            }
        }
    }

    /// Fetches the JWKS URL; concurrent callers wait for the same fetch.
    private func refetch(force: Bool) async {
        let now = ContinuousClock.now
        let task: Task<Void, Never>? = state.withLockedValue { state in
            if let running = state.fetching { return running }
            if !force, let last = state.lastFetch, now - last < config.jwksMinRefetch.duration { return nil }
            state.lastFetch = now
            let task = Task { await self.fetch() }
            state.fetching = task
            return task
        }
        await task?.value
    }

    private func fetch() async {
        defer { state.withLockedValue { $0.fetching = nil } }
        guard let url = config.jwksURL else { return }
        do {
            var request = HTTPClientRequest(url: url)
            request.headers.add(name: "Accept", value: "application/json")
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
            guard response.status == .ok else { throw ConfigValidationError("HTTP \(response.status.code)") }
            let body = try await response.body.collect(upTo: Self.maximumJWKSBytes)
            let keys = try await Self.parse(Data(body.readableBytesView), logger: logger)
            guard !keys.isEmpty else { throw ConfigValidationError("no usable keys") }
            let changed: Bool = state.withLockedValue { state in
                defer { state.jwksKeys = keys }
                return Set(state.jwksKeys.keys) != Set(keys.keys)
            }
            if changed {
                logger.info("JWKS loaded", metadata: ["url": .string(url), "kids": .string(keys.keys.sorted().joined(separator: ","))])
            }
        } catch {
            // Keep the keys we have: an issuer outage must not lock everyone out.
            logger.warning("JWKS fetch failed; keeping the previous keys", metadata: ["url": .string(url), "error": .string("\(error)")])
        }
    }

    /// Usable public keys of a JWKS by kid; private keys, keys without kid, RSA keys under
    /// 2048 bits and unknown types are skipped with a warning.
    static func parse(_ data: Data, logger: Logger) async throws -> [String: Key] {
        let jwks: JWKS
        do {
            jwks = try JSONDecoder().decode(JWKS.self, from: data)
        } catch {
            throw ConfigValidationError("not a JSON Web Key Set: \(error)")
        }
        var keys: [String: Key] = [:]
        for jwk in jwks.keys {
            guard let kid = jwk.keyIdentifier?.string else {
                logger.warning("JWKS key without kid skipped")
                continue
            }
            if jwk.privateExponent != nil {
                logger.warning("JWKS entry holds a private key; skipped", metadata: ["kid": .string(kid)])
                continue
            }
            let algorithms: [JWTAlgorithmName]
            switch jwk.keyType {
            case .rsa:
                let bits = (jwk.modulus.flatMap { Base64URL.decode(Substring($0)) }?.drop { $0 == 0 }.count ?? 0) * 8
                guard bits >= 2048 else {
                    logger.warning("JWKS RSA key under 2048 bits skipped", metadata: ["kid": .string(kid)])
                    continue
                }
                algorithms = [.rs256, .rs384, .rs512]
            case .ecdsa:
                switch jwk.curve?.rawValue {
                case "P-256": algorithms = [.es256]
                case "P-384": algorithms = [.es384]
                default: algorithms = []
                }
            case .octetKeyPair:
                algorithms = jwk.curve?.rawValue == "Ed25519" ? [.eddsa] : []
            default:
                algorithms = []
            }
            let allowed = jwk.algorithm.map { declared in algorithms.filter { $0.rawValue == declared.rawValue } } ?? algorithms
            guard !allowed.isEmpty else {
                logger.warning("JWKS key of an unsupported type or algorithm skipped", metadata: ["kid": .string(kid)])
                continue
            }
            do {
                let collection = try await JWTKeyCollection().add(jwk: jwk)
                keys[kid] = Key(kid: kid, algorithms: allowed, collection: collection)
            } catch {
                logger.warning("JWKS key unusable; skipped", metadata: ["kid": .string(kid), "error": .string("\(error)")])
            }
        }
        return keys
    }
}
