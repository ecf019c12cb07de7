import Foundation
import JWTKit
import Logging
import SwitchboardCore

/// The `jwt` filter: admits upgrades carrying a valid JSON Web Token and makes its subject,
/// roles and topic patterns the connection's principal; closes the connection with 1008
/// `token expired` when the token expires, unless the client sent a `refresh` first.
///
/// Signatures are checked by vapor/jwt-kit. Everything around the signature is decided
/// here and never by the token: the algorithm allowlist comes from the configuration
/// (`none` is never accepted, and a token's `alg` must be the algorithm of the key that
/// verifies it, so an HS256 token "signed" with an RSA public key fails); keys belong to
/// one issuer, so one issuer's key never verifies another issuer's token.
public struct JWTFilter: FilterPlugin {
    public static let typeName = "jwt"
    public static let spec = PluginSpec(
        summary: "Admit WebSocket upgrades that carry a valid JWT (HS/RS/ES/EdDSA; keys inline, from files or JWKS); close on expiry unless refreshed",
        keys: [
            .init("issuer", "string, default: none", "Required `iss`. Without it, only tokens without `iss` match this key set. Use `issuers` for several."),
            .init("keys", "list", "Each entry: `algorithm` (HS256/384/512, RS256/384/512, ES256/384, EdDSA), optional `kid`, and `secret` / `secret_file` (HS) or `public_key` / `public_key_file` (PEM)."),
            .init("jwks_file", "path", "A JSON Web Key Set file (public keys, each with `kid`)."),
            .init("jwks_url", "https URL", "A JWKS fetched at start, every `jwks_refresh`, and on an unknown `kid` (at most every `jwks_min_refetch`). http:// only for loopback."),
            .init("jwks_refresh", "duration, default: 10m", "How often the JWKS URL is fetched again."),
            .init("jwks_min_refetch", "duration, default: 30s", "Least time between fetches caused by tokens with an unknown `kid`."),
            .init("issuers", "list", "Several issuers, each with its own `issuer`, `keys`, `jwks_file`, `jwks_url`, `jwks_refresh`, `jwks_min_refetch`."),
            .init("algorithms", "list, default: those of the configured keys", "Algorithms accepted at all; `none` is never accepted."),
            .init("audience", "string or list, default: not checked", "Accepted `aud` values; the token must name one."),
            .init("leeway", "duration, default: 5s", "Clock skew allowed for `exp`, `nbf` and `iat`."),
            .init("require_exp", "bool, default: true", "Refuse tokens without `exp`."),
            .init("max_age", "duration, default: none", "Refuse tokens whose `iat` is older than this."),
            .init("token_from", "list of header | query | protocol, default: all", "Where the token is read: `Authorization: Bearer`, the query parameter, a `Sec-WebSocket-Protocol` entry."),
            .init("query_parameter", "string, default: token", "Query parameter carrying the token."),
            .init("protocol_prefix", "string, default: bearer.", "`Sec-WebSocket-Protocol` entry `<prefix><token>` (browsers cannot set headers)."),
            .init("claims", "mapping, default: {subject: sub, roles: roles, topics: topics}", "Claim names (dotted paths such as `realm_access.roles` allowed) for the principal."),
            .init("require_roles", "list, default: none", "The token must carry at least one of these roles (else 403)."),
            .init("max_token_size", "size, default: 8KiB", "Longer tokens are refused without parsing."),
            .init("mode", "enforce | observe, default: enforce", "`observe` logs and counts what would be denied and denies nothing."),
        ],
        examples: [
            "filters:\n  - plugin: jwt\n    issuer: https://auth.example.com\n    audience: switchboard\n    keys:\n      - algorithm: HS256\n        secret: ${JWT_SECRET}\n    require_roles: [admin]",
            "filters:\n  - plugin: jwt\n    issuer: https://login.example.com/realms/main\n    jwks_url: https://login.example.com/realms/main/protocol/openid-connect/certs\n    claims: {roles: realm_access.roles}",
        ]
    )

    /// Where a token may be read from.
    public enum TokenSource: String, Sendable, ConfigEnum {
        case header, query, `protocol`
        public static var configPlaceholder: TokenSource { .header }
    }

    /// Claim names for the principal.
    public struct ClaimNames: Decodable, Sendable {
        public var subject = "sub"
        public var roles = "roles"
        public var topics = "topics"

        enum CodingKeys: String, CodingKey { case subject, roles, topics }

        init() {}

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            subject = try container.value(.subject, default: "sub")
            roles = try container.value(.roles, default: "roles")
            topics = try container.value(.topics, default: "topics")
        }
    }

    /// One issuer's key material.
    public struct IssuerConfig: Sendable {
        public var issuer: String?
        public var keys: [KeyConfig]
        public var jwksFile: String?
        public var jwksURL: String?
        public var jwksRefresh: ConfigDuration
        public var jwksMinRefetch: ConfigDuration

        init(from container: KeyedDecodingContainer<ConfigKeys>) throws {
            issuer = try container.decodeIfPresent(String.self, forKey: .issuer)
            keys = try container.value(.keys, default: [])
            jwksFile = try container.decodeIfPresent(String.self, forKey: .jwksFile)
            jwksURL = try container.decodeIfPresent(String.self, forKey: .jwksURL)
            jwksRefresh = try container.value(.jwksRefresh, default: .seconds(600))
            jwksMinRefetch = try container.value(.jwksMinRefetch, default: .seconds(30))
            if keys.isEmpty && jwksFile == nil && jwksURL == nil {
                throw ConfigValidationError("no keys for issuer '\(issuer ?? "(none)")'", hint: "add 'keys', 'jwks_file' or 'jwks_url'")
            }
            if let url = jwksURL {
                guard let parsed = URL(string: url), let scheme = parsed.scheme?.lowercased(), let host = parsed.host else {
                    throw ConfigValidationError("jwks_url '\(url)' is not a URL")
                }
                let loopback = host == "localhost" || host.hasPrefix("127.") || host == "::1" || host == "[::1]"
                guard scheme == "https" || (scheme == "http" && loopback) else {
                    throw ConfigValidationError("jwks_url must use https", hint: "http:// is allowed only for loopback addresses")
                }
            }
            if jwksRefresh.nanoseconds < 1_000_000_000 { throw ConfigValidationError("'jwks_refresh' must be at least 1s") }
            var kids: Set<String> = []
            for key in keys {
                if let kid = key.kid, !kids.insert(kid).inserted { throw ConfigValidationError("duplicate kid '\(kid)'") }
            }
        }
    }

    /// An issuer entry in the `issuers` list.
    struct IssuerEntry: Decodable {
        var value: IssuerConfig
        init(from decoder: any Decoder) throws {
            value = try IssuerConfig(from: decoder.container(keyedBy: ConfigKeys.self))
        }
    }

    enum ConfigKeys: String, CodingKey {
        case issuer, keys, issuers, algorithms, audience, leeway, claims, mode
        case jwksFile = "jwks_file", jwksURL = "jwks_url", jwksRefresh = "jwks_refresh", jwksMinRefetch = "jwks_min_refetch"
        case requireExp = "require_exp", maxAge = "max_age", tokenFrom = "token_from"
        case queryParameter = "query_parameter", protocolPrefix = "protocol_prefix"
        case requireRoles = "require_roles", maxTokenSize = "max_token_size"
    }

    public struct Config: Decodable, Sendable {
        public var issuers: [IssuerConfig]
        public var algorithms: [JWTAlgorithmName]
        public var audience: [String]
        public var leeway: ConfigDuration
        public var requireExp: Bool
        public var maxAge: ConfigDuration?
        public var tokenFrom: [TokenSource]
        public var queryParameter: String
        public var protocolPrefix: String
        public var claims: ClaimNames
        public var requireRoles: [String]
        public var maxTokenSize: ConfigByteSize
        public var mode: FilterMode

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: ConfigKeys.self)
            if container.contains(.issuers) {
                for key in [ConfigKeys.issuer, .keys, .jwksFile, .jwksURL, .jwksRefresh, .jwksMinRefetch] where container.contains(key) {
                    throw ConfigValidationError("'\(key.stringValue)' goes inside an 'issuers' entry when 'issuers' is used")
                }
                issuers = try container.decode([IssuerEntry].self, forKey: .issuers).map(\.value)
                if issuers.isEmpty { throw ConfigValidationError("'issuers' is empty") }
            } else {
                issuers = [try IssuerConfig(from: container)]
            }
            var names: Set<String> = []
            for issuer in issuers where !names.insert(issuer.issuer ?? "").inserted {
                throw ConfigValidationError("issuer '\(issuer.issuer ?? "(none)")' is listed twice")
            }
            let keyAlgorithms = issuers.flatMap(\.keys).map(\.algorithm)
            let jwksInUse = issuers.contains { $0.jwksFile != nil || $0.jwksURL != nil }
            if let listed = try container.decodeIfPresent([JWTAlgorithmName].self, forKey: .algorithms) {
                algorithms = listed
            } else if jwksInUse {
                algorithms = keyAlgorithms + JWTAlgorithmName.allCases.filter { $0.family != .hmac && !keyAlgorithms.contains($0) }
            } else {
                algorithms = keyAlgorithms
            }
            if algorithms.isEmpty { throw ConfigValidationError("'algorithms' is empty") }
            for key in issuers.flatMap(\.keys) where !algorithms.contains(key.algorithm) {
                throw ConfigValidationError("key algorithm \(key.algorithm.rawValue) is not in 'algorithms'")
            }
            audience = try container.value(.audience, default: OneOrMoreStrings([])).values
            leeway = try container.value(.leeway, default: .seconds(5))
            if leeway.nanoseconds < 0 || leeway.nanoseconds > 300_000_000_000 {
                throw ConfigValidationError("'leeway' must be between 0s and 5m")
            }
            requireExp = try container.value(.requireExp, default: true)
            maxAge = try container.decodeIfPresent(ConfigDuration.self, forKey: .maxAge)
            tokenFrom = try container.value(.tokenFrom, default: TokenSource.allCases)
            if tokenFrom.isEmpty { throw ConfigValidationError("'token_from' is empty") }
            queryParameter = try container.value(.queryParameter, default: "token")
            protocolPrefix = try container.value(.protocolPrefix, default: "bearer.")
            if protocolPrefix.isEmpty { throw ConfigValidationError("'protocol_prefix' must not be empty") }
            claims = try container.value(.claims, default: ClaimNames())
            requireRoles = try container.value(.requireRoles, default: [])
            maxTokenSize = try container.value(.maxTokenSize, default: ConfigByteSize(bytes: 8192))
            mode = try container.value(.mode, default: .enforce)
        }
    }

    public static func build(config: Config, context: FilterContext) async throws -> any Filter {
        let verifier = try await JWTVerifier(config: config, logger: context.logger)
        return JWTChecker(config: config, verifier: verifier, denials: context.denials)
    }
}

/// The running filter.
struct JWTChecker: Filter {
    let config: JWTFilter.Config
    let verifier: JWTVerifier
    let denials: FilterDenials

    func admit(_ request: UpgradeRequest, principal: Principal?) async -> FilterDecision {
        let decision: FilterDecision
        if let token = presentedToken(request) {
            decision = await verifier.verify(token)
        } else {
            decision = .deny(status: 401, reason: "missing token")
        }
        return denials.apply(decision, remote: request.remoteAddress, mode: config.mode, principal: principal)
    }

    func refresh(credential: String, current: Principal?) async -> FilterDecision? {
        let decision = await verifier.verify(credential)
        if case .deny(_, let reason, _) = decision { denials.record(reason: "refresh: \(reason)", remote: nil, mode: config.mode) }
        return decision
    }

    /// The token from the first configured place that has one.
    func presentedToken(_ request: UpgradeRequest) -> String? {
        for source in config.tokenFrom {
            switch source {
            case .header:
                if let token = request.bearerToken { return token }
            case .query:
                if let value = request.queryValue(config.queryParameter), !value.isEmpty { return value }
            case .protocol:
                for header in request.headers where header.name.lowercased() == "sec-websocket-protocol" {
                    for entry in header.value.split(separator: ",") {
                        let offer = String(entry).trimmingSpaces()
                        if offer.hasPrefix(config.protocolPrefix) { return String(offer.dropFirst(config.protocolPrefix.count)) }
                    }
                }
            }
        }
        return nil
    }
}
