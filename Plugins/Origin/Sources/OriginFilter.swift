import Logging
import SwitchboardCore

/// The `origin` filter: admits a WebSocket upgrade only when its `Origin` header matches the
/// allow list; denial is HTTP 403 before any WebSocket byte.
///
/// Patterns are full origins: `https://app.example.com`, `https://*.example.com` (any
/// subdomain, never the bare domain), `http://localhost:*` (any port). Matching is exact on
/// scheme, host and port, so `https://example.com.evil.io` and `https://evilexample.com`
/// never match `https://*.example.com`.
public struct OriginFilter: FilterPlugin {
    public static let typeName = "origin"
    public static let spec = PluginSpec(
        summary: "Allow WebSocket upgrades only from listed browser origins (403 otherwise)",
        examples: ["filters:\n  - plugin: origin\n    allow: [\"https://console.example.com\", \"https://*.example.com\", \"http://localhost:*\"]\n    missing: allow"]
    )

    public struct Config: PluginConfig {
        public var allow: [OriginPattern]
        public var missing: MissingPolicy
        public var mode: FilterMode

        static let allow = RequiredKey<[OriginPattern]>(
            "allow", "list of origin patterns",
            "Exact origins, `https://*.example.com` (subdomains), `http://localhost:*` (any port)."
        )
        static let missing = DefaultedKey(
            "missing", "deny | allow", default: MissingPolicy.deny,
            "What to do when the request has no Origin header (non-browser clients send none)."
        )
        static let mode = FilterMode.key
        public static let keys: [any PluginKey] = [Self.allow, Self.missing, Self.mode]

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: PluginCodingKey.self)
            allow = try container.read(Self.allow)
            missing = try container.read(Self.missing)
            mode = try container.read(Self.mode)
            if allow.isEmpty { throw ConfigValidationError("'allow' must list at least one origin") }
        }
    }

    /// What to do without an `Origin` header.
    public enum MissingPolicy: String, Sendable, ConfigEnum {
        case deny, allow
        public static var configPlaceholder: MissingPolicy { .deny }
    }

    public static func build(config: Config, context: FilterContext) async throws -> any Filter {
        OriginChecker(config: config, denials: context.denials)
    }
}

/// A parsed origin pattern.
public struct OriginPattern: Sendable, Equatable, Decodable, ConfigPlaceholder {
    public let scheme: String
    /// Exact host, or the suffix (with leading dot) for `*.` patterns.
    public let host: String
    public let subdomains: Bool
    /// `nil` = any port.
    public let port: Int?

    public static var configPlaceholder: OriginPattern { OriginPattern(scheme: "https", host: "invalid.invalid", subdomains: false, port: 443) }

    init(scheme: String, host: String, subdomains: Bool, port: Int?) {
        self.scheme = scheme
        self.host = host
        self.subdomains = subdomains
        self.port = port
    }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let pattern = OriginPattern(parsing: text) else {
            throw ConfigValidationError(
                "invalid origin pattern '\(text)'",
                hint: "write scheme://host[:port], e.g. https://app.example.com, https://*.example.com or http://localhost:*"
            )
        }
        self = pattern
    }

    /// Parses `scheme://host[:port|:*]` with an optional leading `*.` on the host.
    public init?(parsing text: String) {
        guard let origin = Origin(parsing: text, allowWildcards: true) else { return nil }
        var host = origin.host
        var subdomains = false
        if host.hasPrefix("*.") {
            host = String(host.dropFirst(1))  // keep the dot: ".example.com"
            subdomains = true
            guard host.count > 1, !host.dropFirst().contains("*") else { return nil }
        } else if host.contains("*") {
            return nil
        }
        self.init(scheme: origin.scheme, host: host, subdomains: subdomains, port: origin.port)
    }

    /// Whether `origin` matches.
    public func matches(_ origin: Origin) -> Bool {
        guard origin.scheme == scheme else { return false }
        if let port, origin.port != port { return false }
        if subdomains { return origin.host.hasSuffix(host) && origin.host.count > host.count }
        return origin.host == host
    }
}

/// A browser origin: scheme, lower-cased host and port (default port filled in).
public struct Origin: Sendable, Equatable {
    public let scheme: String
    public let host: String
    public let port: Int?

    /// Parses an `Origin` header value; `nil` for `null` or anything malformed.
    public init?(parsing text: String, allowWildcards: Bool = false) {
        let lowered = text.lowercased()
        guard let separator = lowered.firstRange(of: "://") else { return nil }
        let scheme = String(lowered[..<separator.lowerBound])
        guard ["http", "https"].contains(scheme) else { return nil }
        let rest = lowered[separator.upperBound...]
        guard !rest.isEmpty, !rest.contains("/"), !rest.contains("@"), !rest.contains("?"), !rest.contains("#") else { return nil }
        var host = Substring(rest)
        var port: Int? = scheme == "https" ? 443 : 80
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else { return nil }
            host = rest[...close]
            let after = rest[rest.index(after: close)...]
            if after.hasPrefix(":") {
                guard let value = Int(after.dropFirst()), (1...65535).contains(value) else { return nil }
                port = value
            } else if !after.isEmpty {
                return nil
            }
        } else if let colon = rest.lastIndex(of: ":") {
            host = rest[..<colon]
            let portText = rest[rest.index(after: colon)...]
            if allowWildcards && portText == "*" {
                port = nil
            } else {
                guard let value = Int(portText), (1...65535).contains(value), portText.allSatisfy({ $0.isNumber }) else { return nil }
                port = value
            }
        }
        let allowed = Set("abcdefghijklmnopqrstuvwxyz0123456789.-[]:" + (allowWildcards ? "*" : ""))
        guard !host.isEmpty, host.allSatisfy({ allowed.contains($0) }) else { return nil }
        self.scheme = scheme
        self.host = String(host)
        self.port = port
    }
}

/// The running filter.
struct OriginChecker: Filter {
    let config: OriginFilter.Config
    let denials: FilterDenials

    func admit(_ request: UpgradeRequest, principal: Principal?) async -> FilterDecision {
        denials.apply(decide(request.header("Origin")), remote: request.remoteAddress, mode: config.mode, principal: principal)
    }

    func decide(_ header: String?) -> FilterDecision {
        guard let header, !header.isEmpty else {
            return config.missing == .allow ? .admit(nil) : .deny(status: 403, reason: "missing Origin header")
        }
        guard let origin = Origin(parsing: header) else { return .deny(status: 403, reason: "malformed Origin header") }
        if config.allow.contains(where: { $0.matches(origin) }) { return .admit(nil) }
        return .deny(status: 403, reason: "origin not allowed")
    }
}
