import Crypto
import Foundation
import Logging
import SwitchboardCore

/// The `api_key` filter: admits an upgrade carrying a known API key and makes the key's
/// name, roles and topic patterns the connection's principal.
///
/// Keys are given inline (`key:`, usually `${ENV}`), as SHA-256 hashes (`sha256:`), or in a
/// file. Presented keys are hashed and compared with every configured hash in constant
/// time, so neither timing nor the configuration file reveals a key.
public struct APIKeyFilter: FilterPlugin {
    public static let typeName = "api_key"
    public static let spec = PluginSpec(
        summary: "Admit WebSocket upgrades that carry a known API key; each key has its own roles and topics",
        examples: ["filters:\n  - plugin: api_key\n    keys:\n      - name: dashboard\n        key: ${DASHBOARD_KEY}\n        roles: [viewer]\n        topics: [\"metrics\", \"topic:*\"]"]
    )

    /// One configured key.
    public struct KeyEntry: PluginConfig {
        public var name: String
        public var digest: [UInt8]
        public var roles: [String]
        public var topics: [TopicPattern]?

        static let name = RequiredKey<String>("name", "string", "Name of the key: the principal's identity.")
        static let key = OptionalKey<String>("key", "string", "The key itself, at least 16 characters (use ${ENV}).")
        static let sha256 = OptionalKey<String>("sha256", "hex digest", "SHA-256 of the key (64 hex digits), instead of `key`.")
        static let roles = DefaultedKey<[String]>("roles", "list", default: [], shown: "none", "Roles of the principal.")
        static let topics = OptionalKey<[TopicPattern]>(
            "topics", "list of patterns", whenAbsent: "no restriction", "Topic patterns the principal may subscribe to."
        )
        public static let keys: [any PluginKey] = [Self.name, Self.key, Self.sha256, Self.roles, Self.topics]

        init(name: String, digest: [UInt8], roles: [String], topics: [TopicPattern]?) {
            self.name = name
            self.digest = digest
            self.roles = roles
            self.topics = topics
        }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: PluginCodingKey.self)
            name = try container.read(Self.name)
            roles = try container.read(Self.roles)
            topics = try container.read(Self.topics)
            let plain = try container.read(Self.key)
            let hashed = try container.read(Self.sha256)
            switch (plain, hashed) {
            case (let key?, nil):
                guard key.utf8.count >= 16 else {
                    throw ConfigValidationError("key '\(name)' is shorter than 16 characters", hint: "generate one with: openssl rand -hex 24")
                }
                digest = Array(SHA256.hash(data: Array(key.utf8)))
            case (nil, let hex?):
                guard let bytes = APIKeyFilter.hexBytes(hex), bytes.count == 32 else {
                    throw ConfigValidationError("sha256 of key '\(name)' must be 64 hex digits", hint: "printf %s \"$KEY\" | sha256sum")
                }
                digest = bytes
            default:
                throw ConfigValidationError("key '\(name)' needs exactly one of 'key' or 'sha256'")
            }
        }
    }

    public struct Config: PluginConfig {
        public var keys: [KeyEntry]
        public var header: String
        public var bearer: Bool
        public var query: String?
        public var mode: FilterMode

        static let keyEntries = DefaultedKey<[KeyEntry]>(
            "keys", "list", default: [], shown: "none",
            "Each entry: `name`, one of `key` (plain, use ${ENV}) or `sha256` (hex digest), optional `roles` and `topics`.",
            nested: KeyEntry.keys
        )
        static let file = OptionalKey<String>(
            "file", "path", whenAbsent: "none",
            "Extra keys, one per line: `name sha256:<hex> [roles=a,b] [topics=x,y]` or `name key:<plain> …`; `#` comments."
        )
        static let header = DefaultedKey("header", "string", default: "X-API-Key", "Header carrying the key.")
        static let bearer = DefaultedKey("bearer", "bool", default: true, "Also accept `Authorization: Bearer <key>`.")
        static let query = OptionalKey<String>(
            "query", "string", whenAbsent: "none", "Query parameter carrying the key (for browsers; keys then appear in URLs)."
        )
        static let mode = FilterMode.key
        public static let keys: [any PluginKey] = [Self.keyEntries, Self.file, Self.header, Self.bearer, Self.query, Self.mode]

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: PluginCodingKey.self)
            keys = try container.read(Self.keyEntries)
            let file = try container.read(Self.file)
            header = try container.read(Self.header)
            bearer = try container.read(Self.bearer)
            query = try container.read(Self.query)
            mode = try container.read(Self.mode)
            if let file {
                keys += try APIKeyFilter.loadKeyFile(file)
            }
            if keys.isEmpty { throw ConfigValidationError("no API keys configured", hint: "add 'keys' or 'file'") }
            var names: Set<String> = []
            for key in keys where !names.insert(key.name).inserted {
                throw ConfigValidationError("duplicate key name '\(key.name)'")
            }
        }
    }

    public static func build(config: Config, context: FilterContext) async throws -> any Filter {
        APIKeyChecker(config: config, denials: context.denials)
    }

    static func hexBytes(_ text: String) -> [UInt8]? {
        let digits = Array(text.lowercased().utf8)
        guard digits.count % 2 == 0 else { return nil }
        var bytes: [UInt8] = []
        var index = 0
        while index < digits.count {
            guard let high = hexValue(digits[index]), let low = hexValue(digits[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
            index += 2
        }
        return bytes
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        default: return nil
        }
    }

    /// Reads `name sha256:<hex>|key:<plain> [roles=a,b] [topics=x,y]` lines.
    static func loadKeyFile(_ path: String) throws -> [KeyEntry] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw ConfigValidationError("cannot read key file '\(path)'")
        }
        var entries: [KeyEntry] = []
        for (number, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = rawLine.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init)?.trimmingSpaces() ?? ""
            guard !line.isEmpty else { continue }
            let fields = line.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
            let location = "\(path):\(number + 1)"
            guard fields.count >= 2 else { throw ConfigValidationError("\(location): expected 'name sha256:<hex>' or 'name key:<plain>'") }
            let digest: [UInt8]
            if fields[1].hasPrefix("sha256:"), let bytes = hexBytes(String(fields[1].dropFirst(7))), bytes.count == 32 {
                digest = bytes
            } else if fields[1].hasPrefix("key:"), fields[1].utf8.count >= 20 {
                digest = Array(SHA256.hash(data: Array(fields[1].dropFirst(4).utf8)))
            } else {
                throw ConfigValidationError("\(location): the second field must be sha256:<64 hex digits> or key:<at least 16 characters>")
            }
            var roles: [String] = []
            var topics: [TopicPattern]?
            for field in fields.dropFirst(2) {
                if field.hasPrefix("roles=") {
                    roles = field.dropFirst(6).split(separator: ",").map(String.init)
                } else if field.hasPrefix("topics=") {
                    var patterns: [TopicPattern] = []
                    for text in field.dropFirst(7).split(separator: ",") {
                        guard let pattern = TopicPattern(String(text)) else { throw ConfigValidationError("\(location): invalid topic pattern '\(text)'") }
                        patterns.append(pattern)
                    }
                    topics = patterns
                } else {
                    throw ConfigValidationError("\(location): unknown field '\(field.prefix(20))'", hint: "use roles=… and topics=…")
                }
            }
            entries.append(KeyEntry(name: fields[0], digest: digest, roles: roles, topics: topics))
        }
        return entries
    }
}

/// The running filter.
struct APIKeyChecker: Filter {
    let config: APIKeyFilter.Config
    let denials: FilterDenials

    func admit(_ request: UpgradeRequest, principal: Principal?) async -> FilterDecision {
        denials.apply(decide(request), remote: request.remoteAddress, mode: config.mode, principal: principal)
    }

    func decide(_ request: UpgradeRequest) -> FilterDecision {
        guard let presented = presentedKey(request), !presented.isEmpty else {
            return .deny(status: 401, reason: "missing API key")
        }
        let digest = Array(SHA256.hash(data: Array(presented.utf8)))
        var found: APIKeyFilter.KeyEntry?
        // Every entry is compared in full, whatever matched before.
        for entry in config.keys where ConstantTime.equal(entry.digest, digest) && found == nil {
            found = entry
        }
        guard let entry = found else { return .deny(status: 401, reason: "invalid API key") }
        return .admit(Principal(identity: entry.name, roles: entry.roles, topics: entry.topics))
    }

    private func presentedKey(_ request: UpgradeRequest) -> String? {
        if let value = request.header(config.header) { return value.trimmingSpaces() }
        if config.bearer, let token = request.bearerToken { return token }
        if let name = config.query { return request.queryValue(name) }
        return nil
    }
}
