/// A plugin's configuration keys, each declared once: its YAML name, its type as the
/// documentation shows it, its default and what it means. The same declaration is what the
/// plugin's `init(from:)` reads (``KeyedDecodingContainer/read(_:)``), what `check` lists
/// for a misspelt key ("did you mean"), and what `Docs/plugins-reference.md` and
/// `switchboard plugins` print. A test decodes every documented example and requires the
/// keys the decoder asked for to equal the declared ones.
///
/// ```swift
/// public struct Config: PluginConfig {
///     static let every = RequiredKey<ConfigDuration>("every", "duration", "Interval between events.")
///     static let timeout = DefaultedKey("timeout", "duration", default: ConfigDuration.seconds(5), "Request timeout.")
///     public static let keys: [any PluginKey] = [every, timeout]
///
///     public init(from decoder: any Decoder) throws {
///         let container = try decoder.container(keyedBy: PluginCodingKey.self)
///         every = try container.read(Self.every)
///         timeout = try container.read(Self.timeout)
///         // validate only after every key was read
///     }
/// }
/// ```
public protocol PluginConfig: Decodable, Sendable {
    /// Every key the configuration reads, in the order the documentation lists them.
    static var keys: [any PluginKey] { get }
}

/// One declared key, whatever its value type.
public protocol PluginKey: Sendable {
    /// The YAML key.
    var name: String { get }
    /// Its row in the generated documentation (type and default rendered).
    var documentation: PluginSpec.Key { get }
    /// Keys of the mappings inside its value (a list of `{name, key}` entries), shown as
    /// `name[].key` in the documentation.
    var nested: [any PluginKey] { get }
}

/// A key that must be present.
public struct RequiredKey<Value: Decodable & Sendable>: PluginKey {
    public let name: String
    public let type: String
    public let summary: String
    public let nested: [any PluginKey]

    public init(_ name: String, _ type: String, _ summary: String, nested: [any PluginKey] = []) {
        self.name = name
        self.type = type
        self.summary = summary
        self.nested = nested
    }

    public var documentation: PluginSpec.Key { .init(name, "\(type), required", summary) }
}

/// A key with a fixed default value, used when the key is absent or null.
public struct DefaultedKey<Value: Decodable & Sendable>: PluginKey {
    public let name: String
    public let type: String
    public let defaultValue: Value
    /// How the documentation shows the default.
    public let shownDefault: String
    public let summary: String
    public let nested: [any PluginKey]

    /// `shown` defaults to the value's description (`5s`, `4MiB`, `true`).
    public init(_ name: String, _ type: String, default value: Value, shown: String? = nil, _ summary: String, nested: [any PluginKey] = []) {
        self.name = name
        self.type = type
        self.defaultValue = value
        self.shownDefault = shown ?? Self.describe(value)
        self.summary = summary
        self.nested = nested
    }

    public var documentation: PluginSpec.Key { .init(name, "\(type), default: \(shownDefault)", summary) }

    private static func describe(_ value: Value) -> String {
        if let raw = value as? any RawRepresentable, let text = raw.rawValue as? String { return text }
        return String(describing: value)
    }
}

/// A key that may be absent; its absence means something the plugin works out (`type`
/// defaults to the topic) or nothing at all.
public struct OptionalKey<Value: Decodable & Sendable>: PluginKey {
    public let name: String
    public let type: String
    /// What absence means, for the documentation (`the topic`); `nil`: "optional".
    public let whenAbsent: String?
    public let summary: String
    public let nested: [any PluginKey]

    public init(_ name: String, _ type: String, whenAbsent: String? = nil, _ summary: String, nested: [any PluginKey] = []) {
        self.name = name
        self.type = type
        self.whenAbsent = whenAbsent
        self.summary = summary
        self.nested = nested
    }

    public var documentation: PluginSpec.Key {
        .init(name, whenAbsent.map { "\(type), default: \($0)" } ?? "\(type), optional", summary)
    }
}

/// The coding key of every declared configuration: any YAML key by its name.
public struct PluginCodingKey: CodingKey, Sendable {
    public var stringValue: String
    public var intValue: Int? { nil }
    public init(stringValue: String) { self.stringValue = stringValue }
    public init?(intValue: Int) { nil }
}

extension KeyedDecodingContainer where Key == PluginCodingKey {
    /// The value of a required key.
    public func read<Value>(_ key: RequiredKey<Value>) throws -> Value {
        try decode(Value.self, forKey: PluginCodingKey(stringValue: key.name))
    }

    /// The value of a key, or its default when absent or null.
    public func read<Value>(_ key: DefaultedKey<Value>) throws -> Value {
        try decodeIfPresent(Value.self, forKey: PluginCodingKey(stringValue: key.name)) ?? key.defaultValue
    }

    /// The value of a key, or `nil` when absent or null.
    public func read<Value>(_ key: OptionalKey<Value>) throws -> Value? {
        try decodeIfPresent(Value.self, forKey: PluginCodingKey(stringValue: key.name))
    }
}

extension PluginSpec {
    /// The documentation rows of `keys`: nested keys as `outer[].inner` inside a list,
    /// `outer.inner` inside a mapping.
    public static func rows(for keys: [any PluginKey], prefix: String = "") -> [Key] {
        keys.flatMap { key -> [Key] in
            var row = key.documentation
            row.name = prefix + row.name
            let separator = row.type.hasPrefix("list") ? "[]." : "."
            return [row] + rows(for: key.nested, prefix: row.name + separator)
        }
    }
}
