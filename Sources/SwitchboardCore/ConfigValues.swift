/// Thrown from a config type's `init(from:)` when a value is well-formed YAML but not
/// acceptable; the configuration loader attaches file, line, column and key path.
public struct ConfigValidationError: Error, Sendable, Equatable {
    /// What was wrong and what was expected.
    public var message: String
    /// How to fix it, when there is something useful to say.
    public var hint: String?

    public init(_ message: String, hint: String? = nil) {
        self.message = message
        self.hint = hint
    }
}

/// A config value type that can stand in with a placeholder after a validation error, so
/// the loader keeps going and reports every error at once instead of stopping at the first.
public protocol ConfigPlaceholder {
    static var configPlaceholder: Self { get }
}

/// A duration written as `500ms`, `2s`, `1.5m`, `1h` (or a plain number of seconds).
public struct ConfigDuration: Sendable, Hashable, Decodable, ConfigPlaceholder, CustomStringConvertible {
    /// The length in nanoseconds.
    public var nanoseconds: Int64

    public init(nanoseconds: Int64) { self.nanoseconds = nanoseconds }
    public static func seconds(_ value: Double) -> ConfigDuration { .init(nanoseconds: Int64(value * 1e9)) }
    public static func milliseconds(_ value: Int64) -> ConfigDuration { .init(nanoseconds: value * 1_000_000) }
    public static var configPlaceholder: ConfigDuration { .seconds(1) }

    /// As a Swift `Duration`.
    public var duration: Duration { .nanoseconds(nanoseconds) }
    /// In (fractional) seconds.
    public var seconds: Double { Double(nanoseconds) / 1e9 }

    /// Parses the text form; `nil` when it is not a duration.
    public init?(parsing text: String) {
        let trimmed = text.trimmingSpaces()
        let units: [(String, Double)] = [("ms", 1e6), ("us", 1e3), ("ns", 1), ("s", 1e9), ("m", 60e9), ("h", 3600e9)]
        var number = trimmed
        var scale = 1e9
        for (suffix, factor) in units where trimmed.hasSuffix(suffix) {
            number = String(trimmed.dropLast(suffix.count))
            scale = factor
            break
        }
        guard let value = Double(number), value.isFinite, value >= 0, value * scale < 9e18 else { return nil }
        self.nanoseconds = Int64(value * scale)
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        guard let parsed = ConfigDuration(parsing: text) else {
            throw ConfigValidationError(
                "expected a duration such as 500ms, 2s, 1m or 1h, got '\(text)'",
                hint: "units: ms, s, m, h; a plain number means seconds"
            )
        }
        self = parsed
    }

    public var description: String {
        if nanoseconds % 1_000_000_000 == 0 { return "\(nanoseconds / 1_000_000_000)s" }
        return "\(nanoseconds / 1_000_000)ms"
    }
}

/// A size written as `512`, `64KiB`, `1MiB`, `16KB` (KB/MB are decimal, KiB/MiB binary).
public struct ConfigByteSize: Sendable, Hashable, Decodable, ConfigPlaceholder, CustomStringConvertible {
    /// The size in bytes.
    public var bytes: Int

    public init(bytes: Int) { self.bytes = bytes }
    public static var configPlaceholder: ConfigByteSize { .init(bytes: 1) }

    /// Parses the text form; `nil` when it is not a size.
    public init?(parsing text: String) {
        let trimmed = text.trimmingSpaces()
        let units: [(String, Double)] = [
            ("KiB", 1024), ("MiB", 1024 * 1024), ("GiB", 1024 * 1024 * 1024),
            ("KB", 1000), ("MB", 1_000_000), ("GB", 1_000_000_000), ("B", 1),
        ]
        var number = trimmed
        var scale = 1.0
        for (suffix, factor) in units where trimmed.hasSuffix(suffix) {
            number = String(trimmed.dropLast(suffix.count)).trimmingSpaces()
            scale = factor
            break
        }
        guard let value = Double(number), value.isFinite, value >= 0, value * scale < 1e15 else { return nil }
        self.bytes = Int(value * scale)
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        guard let parsed = ConfigByteSize(parsing: text) else {
            throw ConfigValidationError(
                "expected a size such as 4096, 64KiB or 1MiB, got '\(text)'",
                hint: "units: B, KiB, MiB, GiB (binary) or KB, MB, GB (decimal)"
            )
        }
        self = parsed
    }

    public var description: String {
        if bytes % (1024 * 1024) == 0 && bytes > 0 { return "\(bytes / (1024 * 1024))MiB" }
        if bytes % 1024 == 0 && bytes > 0 { return "\(bytes / 1024)KiB" }
        return "\(bytes)"
    }
}

extension TopicPattern: Decodable, ConfigPlaceholder {
    public static var configPlaceholder: TopicPattern { .everything }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        guard let pattern = TopicPattern(text) else {
            throw ConfigValidationError("invalid topic pattern '\(text)'", hint: TopicPattern.syntaxHelp)
        }
        self = pattern
    }
}

extension String {
    /// The string without leading and trailing spaces, tabs and newlines.
    public func trimmingSpaces() -> String {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }
        guard let start = firstIndex(where: { !isSpace($0) }), let end = lastIndex(where: { !isSpace($0) }) else {
            return ""
        }
        return String(self[start...end])
    }
}

/// A configuration value written as one of a fixed set of words (`mode: shared`). Conforming
/// enums get decoding with a uniform error: "expected 'a', 'b' or 'c', got 'x'" plus a
/// "did you mean" hint.
public protocol ConfigEnum: RawRepresentable, CaseIterable, Decodable, ConfigPlaceholder where RawValue == String {}

extension ConfigEnum {
    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        if let value = Self(rawValue: text) {
            self = value
            return
        }
        let names = Self.allCases.map(\.rawValue)
        let quoted = names.map { "'\($0)'" }
        let list = quoted.count > 1 ? quoted.dropLast().joined(separator: ", ") + " or " + (quoted.last ?? "") : quoted.joined()
        throw ConfigValidationError(
            "expected \(list), got '\(text)'",
            hint: Suggestion.closest(to: text, in: names).map { "did you mean '\($0)'?" }
        )
    }
}

/// Lets a config type accept two shapes for one key (`- my-key` or `- {key: …, topics: …}`)
/// by asking what the value is before decoding it; the configuration loader's decoder
/// conforms. Probing records no error.
public protocol ConfigShapeProbing {
    /// Whether the value being decoded is a mapping.
    var isMapping: Bool { get }
    /// Whether the value being decoded is a sequence.
    var isSequence: Bool { get }
}

/// A config value written either as one string or as a list of strings
/// (`audience: api` or `audience: [api, admin]`).
public struct OneOrMoreStrings: Decodable, Sendable, Equatable, ConfigPlaceholder {
    public var values: [String]

    public init(_ values: [String]) { self.values = values }
    public static var configPlaceholder: OneOrMoreStrings { .init([]) }

    public init(from decoder: any Decoder) throws {
        if let probe = decoder as? any ConfigShapeProbing, !probe.isSequence {
            values = [try decoder.singleValueContainer().decode(String.self)]
        } else {
            values = try [String](from: decoder)
        }
    }
}
