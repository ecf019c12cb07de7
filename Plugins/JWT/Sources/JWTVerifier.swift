import Foundation
import JWTKit
import Logging
import SwitchboardCore

/// Checks tokens against the configured issuers.
///
/// The order matters for safety: size, shape, algorithm allowlist, issuer, key (by issuer
/// *and* kid), algorithm = key's algorithm, signature (jwt-kit), then claims. Nothing from
/// the token selects an algorithm or a key outside its own issuer's set.
final class JWTVerifier: Sendable {
    let config: JWTFilter.Config
    let issuers: [IssuerKeySet]

    init(config: JWTFilter.Config, logger: Logger) async throws {
        self.config = config
        var sets: [IssuerKeySet] = []
        for issuer in config.issuers {
            var keys: [IssuerKeySet.Key] = []
            for key in issuer.keys {
                keys.append(.init(kid: key.kid, algorithms: [key.algorithm], collection: await key.key.collection(algorithm: key.algorithm)))
            }
            let set = IssuerKeySet(config: issuer, staticKeys: keys, logger: logger)
            try await set.loadInitialJWKS()
            sets.append(set)
        }
        issuers = sets
    }

    /// Why a token is refused: the reason is what clients, logs and counters see; it never
    /// contains the token.
    private struct Refusal: Error {
        let status: Int
        let reason: String
        init(_ reason: String, status: Int = 401) {
            self.reason = reason
            self.status = status
        }
    }

    func verify(_ token: String) async -> FilterDecision {
        do {
            return .admit(try await check(token))
        } catch let refusal as Refusal {
            return .deny(status: refusal.status, reason: refusal.reason)
        } catch {
            return .deny(status: 401, reason: "invalid token")
        }
    }

    private func check(_ token: String) async throws -> Principal {
        guard token.utf8.count <= config.maxTokenSize.bytes else { throw Refusal("token too large") }
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, !parts[0].isEmpty, !parts[1].isEmpty else { throw Refusal("malformed token") }
        guard let headerBytes = Base64URL.decode(parts[0]), case .object(let header)? = try? JSONParser.parse(headerBytes),
            let payloadBytes = Base64URL.decode(parts[1]), case .object(let claims)? = try? JSONParser.parse(payloadBytes),
            Base64URL.decode(parts[2]) != nil
        else { throw Refusal("malformed token") }

        // Algorithm: from the allowlist, never chosen by the token.
        guard let algText = header["alg"]?.stringValue else { throw Refusal("malformed token") }
        if algText.lowercased() == "none" { throw Refusal("algorithm none is not accepted") }
        guard let algorithm = JWTAlgorithmName(rawValue: algText), config.algorithms.contains(algorithm) else {
            throw Refusal("algorithm not allowed")
        }
        if header["crit"] != nil { throw Refusal("unsupported critical header") }

        // Issuer, then that issuer's key.
        let issuer: String?
        switch claims["iss"] {
        case nil: issuer = nil
        case .string(let text)?: issuer = text
        default: throw Refusal("malformed token")
        }
        guard let keySet = issuers.first(where: { $0.issuer == issuer }) else { throw Refusal("unknown issuer") }
        let kid: String?
        switch header["kid"] {
        case nil: kid = nil
        case .string(let text)?: kid = text
        default: throw Refusal("malformed token")
        }
        let candidates = try await keySet.keys(kid: kid, algorithm: algorithm)
        if candidates.isEmpty {
            throw Refusal(kid == nil ? "no key for this algorithm" : "unknown key id")
        }
        var verified = false
        for key in candidates where key.algorithms.contains(algorithm) {
            if (try? await key.collection.verify(token, as: OpaqueClaims.self)) != nil {
                verified = true
                break
            }
        }
        guard verified else {
            if !candidates.contains(where: { $0.algorithms.contains(algorithm) }) { throw Refusal("algorithm does not match the key") }
            throw Refusal("invalid signature")
        }
        return try principal(from: claims)
    }

    /// Time claims, audience and the principal.
    private func principal(from claims: JSONObject) throws -> Principal {
        let now = Double(UnixTime.nowMilliseconds()) / 1000
        let leeway = config.leeway.seconds
        let expiry = try number(claims, "exp")
        if let expiry {
            if now >= expiry + leeway { throw Refusal("token expired") }
        } else if config.requireExp {
            throw Refusal("token has no expiry")
        }
        if let notBefore = try number(claims, "nbf"), now + leeway < notBefore { throw Refusal("token not yet valid") }
        if let issuedAt = try number(claims, "iat") {
            if issuedAt > now + leeway { throw Refusal("token issued in the future") }
            if let maxAge = config.maxAge, now - issuedAt > maxAge.seconds + leeway { throw Refusal("token too old") }
        } else if config.maxAge != nil {
            throw Refusal("token has no issue time")
        }
        if !config.audience.isEmpty {
            let audiences: [String]
            switch claims["aud"] {
            case .string(let one)?: audiences = [one]
            case .array(let many)?: audiences = many.compactMap(\.stringValue)
            default: audiences = []
            }
            guard audiences.contains(where: config.audience.contains) else { throw Refusal("wrong audience") }
        }
        guard let subject = Self.lookup(claims, config.claims.subject)?.stringValue, !subject.isEmpty else {
            throw Refusal("token has no subject")
        }
        let roles: [String]
        switch Self.lookup(claims, config.claims.roles) {
        case .string(let text)?: roles = text.split(whereSeparator: { $0 == " " || $0 == "," }).map(String.init)
        case .array(let items)?: roles = items.compactMap(\.stringValue)
        default: roles = []
        }
        if !config.requireRoles.isEmpty, !roles.contains(where: config.requireRoles.contains) {
            throw Refusal("missing required role", status: 403)
        }
        var topics: [TopicPattern]?
        if let value = Self.lookup(claims, config.claims.topics) {
            guard case .array(let items) = value else { throw Refusal("invalid topics claim") }
            var patterns: [TopicPattern] = []
            for item in items {
                guard let text = item.stringValue, let pattern = TopicPattern(text) else { throw Refusal("invalid topics claim") }
                patterns.append(pattern)
            }
            topics = patterns
        }
        // `exp` is the token's to choose: a far-future value (1e16, 9.3e18, 1e300) must
        // not trap the conversion. Anything past year 5000 means "does not expire here".
        let closesAt = expiry.flatMap { value -> Int64? in
            let seconds = (value + leeway).rounded(.up)
            guard seconds.isFinite, seconds < Self.latestExpiry else { return nil }
            guard seconds > 0 else { return 0 }
            return Int64(seconds)
        }
        return Principal(identity: subject, roles: roles, topics: topics, expiresAt: closesAt)
    }

    /// Seconds since the epoch of 5000-01-01: a later `exp` is treated as no expiry.
    static let latestExpiry: Double = 95_617_584_000

    private func number(_ claims: JSONObject, _ name: String) throws -> Double? {
        switch claims[name] {
        case nil: return nil
        case .int(let value)?: return Double(value)
        case .double(let value)?: return value.isFinite ? value : nil
        default: throw Refusal("malformed \(name) claim")
        }
    }

    /// A claim by name or dotted path (`realm_access.roles`).
    static func lookup(_ claims: JSONObject, _ path: String) -> JSONValue? {
        if let direct = claims[path] { return direct }
        var current: JSONValue = .object(claims)
        for component in path.split(separator: ".") {
            guard let next = current[String(component)] else { return nil }
            current = next
        }
        return current
    }
}

/// The payload type handed to jwt-kit, which only checks the signature: the claims are
/// read by ``JWTVerifier`` from the same (now verified) bytes.
struct OpaqueClaims: JWTPayload {
    init(from decoder: any Decoder) throws {}
    func encode(to encoder: any Encoder) throws {}
    func verify(using algorithm: some JWTAlgorithm) async throws {}
}

/// Base64url without padding (RFC 7515 §2), strict: any other character, or a
/// non-canonical final character, fails.
enum Base64URL {
    static func decode(_ text: Substring) -> [UInt8]? {
        var output: [UInt8] = []
        output.reserveCapacity(text.utf8.count * 3 / 4)
        var buffer: UInt32 = 0
        var bits = 0
        for byte in text.utf8 {
            let value: UInt8
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): value = byte - UInt8(ascii: "A")
            case UInt8(ascii: "a")...UInt8(ascii: "z"): value = byte - UInt8(ascii: "a") + 26
            case UInt8(ascii: "0")...UInt8(ascii: "9"): value = byte - UInt8(ascii: "0") + 52
            case UInt8(ascii: "-"): value = 62
            case UInt8(ascii: "_"): value = 63
            default: return nil
            }
            buffer = (buffer << 6) | UInt32(value)
            bits += 6
            if bits >= 8 {
                bits -= 8
                output.append(UInt8(truncatingIfNeeded: buffer >> UInt32(bits)))
            }
        }
        // 6 leftover bits cannot come from whole bytes; leftover bits must be zero so that
        // every byte string has exactly one encoding (no malleable signatures).
        guard bits < 6, buffer & ((1 << UInt32(bits)) - 1) == 0 else { return nil }
        return output
    }
}
