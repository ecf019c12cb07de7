/// A topic or trailing-wildcard pattern: `metrics`, `topic:*`, or `*` for everything.
///
/// Only a single `*` at the very end is a wildcard; it matches any (possibly empty) rest.
public struct TopicPattern: Sendable, Hashable, CustomStringConvertible {
    /// The text as written.
    public let text: String
    /// For a wildcard, the prefix before `*`; `nil` for an exact topic.
    public let prefix: String?

    /// Parses `text`; returns `nil` when it is empty, contains whitespace or control
    /// characters, or has a `*` anywhere but at the end.
    public init?(_ text: String) {
        guard !text.isEmpty, text.utf8.count <= 256 else { return nil }
        for scalar in text.unicodeScalars where scalar.value < 0x21 || scalar.value == 0x7F {
            return nil
        }
        if let star = text.firstIndex(of: "*") {
            guard text.index(after: star) == text.endIndex else { return nil }
            self.prefix = String(text[..<star])
        } else {
            self.prefix = nil
        }
        self.text = text
    }

    /// The pattern matching every topic (`*`).
    public static let everything = TopicPattern(wildcardPrefix: "")

    private init(wildcardPrefix: String) {
        self.text = wildcardPrefix + "*"
        self.prefix = wildcardPrefix
    }

    /// Whether this is a wildcard pattern.
    public var isWildcard: Bool { prefix != nil }

    /// Whether `topic` matches.
    public func matches(_ topic: String) -> Bool {
        if let prefix { return topic.hasPrefix(prefix) }
        return topic == text
    }

    /// Whether everything this pattern can match is also matched by `other`
    /// (used to check a subscription against an allow list).
    public func isCovered(by other: TopicPattern) -> Bool {
        switch (prefix, other.prefix) {
        case (nil, _): return other.matches(text)
        case (let mine?, let theirs?): return mine.hasPrefix(theirs)
        case (_?, nil): return false
        }
    }

    public var description: String { text }

    /// Why a pattern text was refused, for error messages.
    public static let syntaxHelp =
        "a topic is 1–256 visible characters; '*' is allowed only at the end (e.g. 'topic:*')"
}

extension [TopicPattern] {
    /// Whether `pattern` is covered by any element.
    public func covers(_ pattern: TopicPattern) -> Bool {
        contains { pattern.isCovered(by: $0) }
    }
}
