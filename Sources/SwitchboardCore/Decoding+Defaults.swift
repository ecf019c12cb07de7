extension KeyedDecodingContainer {
    /// `decodeIfPresent(...) ?? fallback`: the idiom for optional keys with defaults.
    public func value<T: Decodable>(_ key: Key, default fallback: @autoclosure () -> T) throws -> T {
        try decodeIfPresent(T.self, forKey: key) ?? fallback()
    }
}

extension UnkeyedDecodingContainer {
    /// Decodes every remaining element, skipping (already reported) failures so one bad
    /// element does not hide the errors of the next.
    public mutating func decodeEach<T: Decodable>(_ type: T.Type) -> [T] {
        var values: [T] = []
        while !isAtEnd {
            let before = currentIndex
            if let value = try? decode(T.self) { values.append(value) }
            if currentIndex == before { break }
        }
        return values
    }
}
