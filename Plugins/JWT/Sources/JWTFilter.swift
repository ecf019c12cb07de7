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
    public struct ClaimNames: PluginConfig {
        public var subject: String
        public var roles: String
        public var topics: String

        static let subject = DefaultedKey("subject", "string", default: "sub", "Claim holding the principal's identity.")
        static let roles = DefaultedKey("roles", "string", default: "roles", "Claim holding the roles (a list, or a string split at spaces and commas).")
        static let topics = DefaultedKey("topics", "string", default: "topics", "Claim holding the list of topic patterns.")
        public static let keys: [any PluginKey] = [Self.subject, Self.roles, Self.topics]

        /// The default names.
        init() {
            subject = Self.subject.defaultValue
            roles = Self.roles.defaultValue
            topics = Self.topics.defaultValue
        }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: PluginCodingKey.self)
            subject = try container.read(Self.subject)
            roles = try container.read(Self.roles)
            topics = try container.read(Self.topics)
        }
    }

    /// One issuer's key material: the top-level keys of the filter, or one `issuers` entry.
    public struct IssuerConfig: PluginConfig {
        public var issuer: String?
        public var keys: [KeyConfig]
        public var jwksFile: String?
        public var jwksURL: String?
        public var jwksRefresh: ConfigDuration
        public var jwksMinRefetch: ConfigDuration

        static let issuer = OptionalKey<String>(
            "issuer", "string", whenAbsent: "none",
            "Required `iss`. Without it, only tokens without `iss` match this key set. Use `issuers` for several."
        )
        static let keyEntries = DefaultedKey<[KeyConfig]>(
            "keys", "list", default: [], shown: "none",
            "Each entry: `algorithm` (HS256/384/512, RS256/384/512, ES256/384, EdDSA), optional `kid`, and `secret` / `secret_file` (HS) or `public_key` / `public_key_file` (PEM).",
            nested: KeyConfig.keys
        )
        static let jwksFile = OptionalKey<String>("jwks_file", "path", whenAbsent: "none", "A JSON Web Key Set file (public keys, each with `kid`).")
        static let jwksURL = OptionalKey<String>(
            "jwks_url", "https URL", whenAbsent: "none",
            "A JWKS fetched at start, every `jwks_refresh`, and on an unknown `kid` (at most every `jwks_min_refetch`). http:// only for loopback."
        )
        static let jwksRefresh = DefaultedKey(
            "jwks_refresh", "duration", default: ConfigDuration.seconds(600), shown: "10m", "How often the JWKS URL is fetched again."
        )
        static let jwksMinRefetch = DefaultedKey(
            "jwks_min_refetch", "duration", default: ConfigDuration.seconds(30),
            "Least time between fetches caused by tokens with an unknown `kid`."
        )
        public static let keys: [any PluginKey] = [
            Self.issuer, Self.keyEntries, Self.jwksFile, Self.jwksURL, Self.jwksRefresh, Self.jwksMinRefetch,
        ]

        /// An `issuers` entry: read, then checked.
        public init(from decoder: any Decoder) throws {
            try self.init(reading: decoder.container(keyedBy: PluginCodingKey.self))
            try validate()
        }

        /// Reads every declared key without checking the result (`validate()` does).
        init(reading container: KeyedDecodingContainer<PluginCodingKey>) throws {
            issuer = try container.read(Self.issuer)
            keys = try container.read(Self.keyEntries)
            jwksFile = try container.read(Self.jwksFile)
            jwksURL = try container.read(Self.jwksURL)
            jwksRefresh = try container.read(Self.jwksRefresh)
            jwksMinRefetch = try container.read(Self.jwksMinRefetch)
        }

        func validate() throws {
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

    public struct Config: PluginConfig {
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

        static let issuers = OptionalKey<[IssuerConfig]>(
            "issuers", "list", whenAbsent: "none",
            "Several issuers, each with its own `issuer`, `keys`, `jwks_file`, `jwks_url`, `jwks_refresh`, `jwks_min_refetch`."
        )
        static let algorithms = OptionalKey<[JWTAlgorithmName]>(
            "algorithms", "list", whenAbsent: "those of the configured keys", "Algorithms accepted at all; `none` is never accepted."
        )
        static let audience = DefaultedKey(
            "audience", "string or list", default: OneOrMoreStrings([]), shown: "not checked",
            "Accepted `aud` values; the token must name one."
        )
        static let leeway = DefaultedKey("leeway", "duration", default: ConfigDuration.seconds(5), "Clock skew allowed for `exp`, `nbf` and `iat`.")
        static let requireExp = DefaultedKey("require_exp", "bool", default: true, "Refuse tokens without `exp`.")
        static let maxAge = OptionalKey<ConfigDuration>("max_age", "duration", whenAbsent: "none", "Refuse tokens whose `iat` is older than this.")
        static let tokenFrom = DefaultedKey(
            "token_from", "list of header | query | protocol", default: TokenSource.allCases, shown: "all",
            "Where the token is read: `Authorization: Bearer`, the query parameter, a `Sec-WebSocket-Protocol` entry."
        )
        static let queryParameter = DefaultedKey("query_parameter", "string", default: "token", "Query parameter carrying the token.")
        static let protocolPrefix = DefaultedKey(
            "protocol_prefix", "string", default: "bearer.", "`Sec-WebSocket-Protocol` entry `<prefix><token>` (browsers cannot set headers)."
        )
        static let claims = DefaultedKey(
            "claims", "mapping", default: ClaimNames(), shown: "{subject: sub, roles: roles, topics: topics}",
            "Claim names (dotted paths such as `realm_access.roles` allowed) for the principal.",
            nested: ClaimNames.keys
        )
        static let requireRoles = DefaultedKey<[String]>(
            "require_roles", "list", default: [], shown: "none", "The token must carry at least one of these roles (else 403)."
        )
        static let maxTokenSize = DefaultedKey(
            "max_token_size", "size", default: ConfigByteSize(bytes: 8192), "Longer tokens are refused without parsing."
        )
        static let mode = FilterMode.key
        /// The keys of a single issuer first (they may stand at the top level), then the rest.
        public static let keys: [any PluginKey] = [
            IssuerConfig.issuer, IssuerConfig.keyEntries, IssuerConfig.jwksFile, IssuerConfig.jwksURL,
            IssuerConfig.jwksRefresh, IssuerConfig.jwksMinRefetch,
            Self.issuers, Self.algorithms, Self.audience, Self.leeway, Self.requireExp, Self.maxAge, Self.tokenFrom,
            Self.queryParameter, Self.protocolPrefix, Self.claims, Self.requireRoles, Self.maxTokenSize, Self.mode,
        ]

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: PluginCodingKey.self)
            // Every key is read before anything is checked; the top-level issuer keys are
            // read even when `issuers` is used (and then refused below).
            let topLevelIssuer = try IssuerConfig(reading: container)
            let listedIssuers = try container.read(Self.issuers)
            let listedAlgorithms = try container.read(Self.algorithms)
            audience = try container.read(Self.audience).values
            leeway = try container.read(Self.leeway)
            requireExp = try container.read(Self.requireExp)
            maxAge = try container.read(Self.maxAge)
            tokenFrom = try container.read(Self.tokenFrom)
            queryParameter = try container.read(Self.queryParameter)
            protocolPrefix = try container.read(Self.protocolPrefix)
            claims = try container.read(Self.claims)
            requireRoles = try container.read(Self.requireRoles)
            maxTokenSize = try container.read(Self.maxTokenSize)
            mode = try container.read(Self.mode)

            // `issuers:` written but null counts as an empty list, not as absent.
            let issuersGiven = container.contains(PluginCodingKey(stringValue: Self.issuers.name))
            if let listedIssuers = listedIssuers ?? (issuersGiven ? [] : nil) {
                for key in IssuerConfig.keys where container.contains(PluginCodingKey(stringValue: key.name)) {
                    throw ConfigValidationError("'\(key.name)' goes inside an 'issuers' entry when 'issuers' is used")
                }
                if listedIssuers.isEmpty { throw ConfigValidationError("'issuers' is empty") }
                issuers = listedIssuers
            } else {
                try topLevelIssuer.validate()
                issuers = [topLevelIssuer]
            }
            var names: Set<String> = []
            for issuer in issuers where !names.insert(issuer.issuer ?? "").inserted {
                throw ConfigValidationError("issuer '\(issuer.issuer ?? "(none)")' is listed twice")
            }
            let keyAlgorithms = issuers.flatMap(\.keys).map(\.algorithm)
            let jwksInUse = issuers.contains { $0.jwksFile != nil || $0.jwksURL != nil }
            if let listedAlgorithms {
                algorithms = listedAlgorithms
            } else if jwksInUse {
                algorithms = keyAlgorithms + JWTAlgorithmName.allCases.filter { $0.family != .hmac && !keyAlgorithms.contains($0) }
            } else {
                algorithms = keyAlgorithms
            }
            if algorithms.isEmpty { throw ConfigValidationError("'algorithms' is empty") }
            for key in issuers.flatMap(\.keys) where !algorithms.contains(key.algorithm) {
                throw ConfigValidationError("key algorithm \(key.algorithm.rawValue) is not in 'algorithms'")
            }
            if leeway.nanoseconds < 0 || leeway.nanoseconds > 300_000_000_000 {
                throw ConfigValidationError("'leeway' must be between 0s and 5m")
            }
            if tokenFrom.isEmpty { throw ConfigValidationError("'token_from' is empty") }
            if protocolPrefix.isEmpty { throw ConfigValidationError("'protocol_prefix' must not be empty") }
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
