import SwitchboardCore
import Yams

/// A `Decoder` over a Yams node that records every problem as a ``Diagnostic`` with
/// position and key path, substitutes placeholders so decoding can continue, and tracks
/// which mapping keys were asked for so unknown keys can be reported afterwards.
struct NodeDecoder: Decoder, ConfigShapeProbing {
    let session: DecodingSession
    let node: Node
    let path: [PathComponent]
    let plugin: String?

    var codingPath: [any CodingKey] {
        path.map { component in
            switch component {
            case .key(let key): return PlainKey(stringValue: key)
            case .index(let index): return PlainKey(intValue: index)
            }
        }
    }

    var userInfo: [CodingUserInfoKey: Any] { [:] }

    var isMapping: Bool {
        if case .mapping = node { return true }
        return false
    }

    var isSequence: Bool {
        if case .sequence = node { return true }
        return false
    }

    /// The same node decoded as the configuration of plugin `name` (for error labels).
    func forPlugin(_ name: String) -> NodeDecoder {
        NodeDecoder(session: session, node: node, path: path, plugin: name)
    }

    /// Runs a plugin's config decoding, attributing its validation errors to this node
    /// under the plugin's label. `declaring`: the keys the plugin declares
    /// (``PluginConfig/keys``); any other key in the block is reported as unknown with a
    /// "did you mean", even when the plugin's own validation fails before it read them all.
    func decodePlugin<Built>(declaring keys: [String], _ decode: (any Decoder) throws -> Built) throws -> Built {
        if case .mapping(let mapping) = node, !keys.isEmpty {
            session.tracker(for: mapping, path: path, plugin: plugin).asked.formUnion(keys)
        }
        do {
            return try decode(self)
        } catch is ReportedError where !keys.isEmpty {
            // A required key missing, a list entry that failed: already reported; the
            // block's other keys are still checked against the declared ones.
            throw ReportedError(keysAccountedFor: renderPath(path))
        } catch let error as ConfigValidationError {
            // A block whose keys already had a problem (an unset variable, a bad value)
            // fails its own validation because of it: report the cause only.
            session.reportValidationFailure(error, mark: node.mark, path: path, plugin: plugin)
            // Without declared keys, the keys the plugin had not read yet are not unknown.
            if keys.isEmpty {
                session.markAborted(path)
                throw ReportedError()
            }
            throw ReportedError(keysAccountedFor: renderPath(path))
        }
    }

    /// The value of `key` when this node is a mapping that has it.
    func mappingValue(_ key: String) -> NodeDecoder? {
        guard case .mapping(let mapping) = node, let value = mapping.first(where: { $0.key.scalar?.string == key })?.value else { return nil }
        return NodeDecoder(session: session, node: value, path: path + [.key(key)], plugin: plugin)
    }

    /// Records a problem at this node, or at the value of `key` when given and present.
    /// Today's name of the plugin called `name` in the YAML: a former name is accepted
    /// with a deprecation warning at `plugin:`.
    func currentPluginName(_ name: String, registry: PluginRegistry) -> String {
        guard let current = registry.formerNames[name] else { return name }
        var mark = node.mark
        if case .mapping(let mapping) = node, let value = mapping.first(where: { $0.key.scalar?.string == "plugin" })?.value { mark = value.mark }
        session.warn(
            "plugin name '\(name)' is deprecated",
            hint: "write plugin: \(current); the old spelling will stop working in a later release",
            mark: mark, path: path + [.key("plugin")], plugin: nil
        )
        return current
    }

    /// A check of a value failed: reported unless that value (or one inside it, or one of
    /// `alsoAbout`, keys of this mapping the check compares it with) is a stand-in for one
    /// that could not be decoded, already reported.
    func report(_ message: String, hint: String? = nil, key: String? = nil, alsoAbout others: [String] = []) {
        let (mark, reportPath) = position(of: key)
        if session.hasSubstitutedValue(atOrUnder: reportPath) { return }
        if others.contains(where: { session.hasSubstitutedValue(atOrUnder: path + [.key($0)]) }) { return }
        session.report(message, hint: hint, mark: mark, path: reportPath, plugin: plugin)
    }

    /// A problem with the value at this node or under `key` that is not about its content
    /// (two spellings of one key both given): reported even after a stand-in.
    func reportRegardless(_ message: String, hint: String? = nil, key: String) {
        let (mark, reportPath) = position(of: key)
        session.report(message, hint: hint, mark: mark, path: reportPath, plugin: plugin)
    }

    /// Where a report about this node, or about the value of `key` in it, points.
    private func position(of key: String?) -> (Mark?, [PathComponent]) {
        guard let key, case .mapping(let mapping) = node else { return (node.mark, path) }
        let value = mapping.first(where: { $0.key.scalar?.string == key })?.value
        return (value?.mark ?? node.mark, path + [.key(key)])
    }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        guard case .mapping(let mapping) = node else {
            if DecodingSession.isNull(node) {
                let empty = Node.Mapping([], .implicit, .block, node.mark)
                let tracker = session.tracker(for: empty, path: path, plugin: plugin)
                return KeyedDecodingContainer(NodeKeyedContainer<Key>(decoder: self, tracker: tracker))
            }
            session.report("expected a mapping, got \(session.describe(node))", mark: node.mark, path: path, plugin: plugin)
            throw ReportedError()
        }
        var seen: Set<String> = []
        for pair in mapping {
            guard let key = pair.key.scalar?.string else {
                session.report("mapping keys must be plain strings", mark: pair.key.mark, path: path, plugin: plugin)
                continue
            }
            if !seen.insert(key).inserted {
                session.report("duplicate key '\(key)'", mark: pair.key.mark, path: path, plugin: plugin)
            }
        }
        let tracker = session.tracker(for: mapping, path: path, plugin: plugin)
        return KeyedDecodingContainer(NodeKeyedContainer<Key>(decoder: self, tracker: tracker))
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        switch node {
        case .sequence(let sequence):
            return NodeUnkeyedContainer(decoder: self, elements: Array(sequence))
        case _ where DecodingSession.isNull(node):
            return NodeUnkeyedContainer(decoder: self, elements: [])
        default:
            session.report("expected a list, got \(session.describe(node))", mark: node.mark, path: path, plugin: plugin)
            throw ReportedError()
        }
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer {
        NodeSingleValueContainer(decoder: self)
    }

    /// Decodes `type` from `node` at `path`, attributing validation errors to that node.
    func decodeValue<T: Decodable>(_ type: T.Type, node: Node, path: [PathComponent]) throws -> T {
        let child = NodeDecoder(session: session, node: node, path: path, plugin: plugin)
        if case .alias = node {
            child.report("YAML aliases are not supported")
            throw ReportedError()
        }
        if let value = try child.decodePrimitive(type) { return value }
        do {
            return try T(from: child)
        } catch let error as ConfigValidationError {
            session.reportValidationFailure(error, mark: node.mark, path: path, plugin: plugin)
            if let placeholder = (T.self as? any ConfigPlaceholder.Type)?.configPlaceholder as? T {
                session.substituted(path)
                return placeholder
            }
            session.markAborted(path)
            throw ReportedError()
        } catch let error as ReportedError {
            if error.keysAccountedFor != renderPath(path) { session.markAborted(path) }
            throw ReportedError()
        } catch {
            child.report("\(error)")
            session.markAborted(path)
            throw ReportedError()
        }
    }

    /// Primitive scalars decode leniently: a bad value is reported and a zero value returned.
    func decodePrimitive<T>(_ type: T.Type) throws -> T? {
        if T.self == JSONValue.self { return try jsonValue(node, path: path) as? T }
        if T.self == String.self { return (text(expected: "a string") ?? "") as? T }
        if T.self == Bool.self { return bool() as? T }
        if T.self == Int.self { return integer(Int.self) as? T }
        if T.self == Int64.self { return integer(Int64.self) as? T }
        if T.self == Int32.self { return integer(Int32.self) as? T }
        if T.self == UInt16.self { return integer(UInt16.self) as? T }
        if T.self == UInt32.self { return integer(UInt32.self) as? T }
        if T.self == UInt64.self { return integer(UInt64.self) as? T }
        if T.self == UInt8.self { return integer(UInt8.self) as? T }
        if T.self == UInt.self { return integer(UInt.self) as? T }
        if T.self == Int8.self { return integer(Int8.self) as? T }
        if T.self == Int16.self { return integer(Int16.self) as? T }
        if T.self == Double.self { return double() as? T }
        if T.self == Float.self { return Float(double()) as? T }
        return nil
    }

    /// Converts free-form YAML (static payloads) to JSON, resolving plain scalars the YAML
    /// 1.2 core way: null, booleans, integers, floats, else strings.
    func jsonValue(_ node: Node, path: [PathComponent]) throws -> JSONValue {
        switch node {
        case .scalar(let scalar):
            if scalar.style == .plain {
                if DecodingSession.isNull(node) { return .null }
                switch scalar.string {
                case "true", "True", "TRUE": return .bool(true)
                case "false", "False", "FALSE": return .bool(false)
                default: break
                }
                if let integer = Int64(scalar.string) { return .int(integer) }
                if let number = Double(scalar.string), number.isFinite,
                    scalar.string.contains(where: { $0.isNumber })
                {
                    return .double(number)
                }
            }
            let child = NodeDecoder(session: session, node: node, path: path, plugin: plugin)
            return .string(child.text(expected: "a value") ?? "")
        case .mapping(let mapping):
            var object = JSONObject()
            for pair in mapping {
                let key = pair.key.scalar?.string ?? ""
                object.entries.append((key, try jsonValue(pair.value, path: path + [.key(key)])))
            }
            return .object(object)
        case .sequence(let sequence):
            return .array(try sequence.enumerated().map { try jsonValue($0.element, path: path + [.index($0.offset)]) })
        case .alias:
            session.report("YAML aliases are not supported", mark: node.mark, path: path, plugin: plugin)
            throw ReportedError()
        }
    }

    func text(expected: String) -> String? {
        session.scalarText(node, path: path, plugin: plugin, expected: expected)
    }

    func bool() -> Bool {
        guard let text = text(expected: "true or false") else { return false }
        switch text {
        case "true", "True", "TRUE": return true
        case "false", "False", "FALSE": return false
        default:
            report("expected true or false, got '\(text)'")
            session.substituted(path)
            return false
        }
    }

    func integer<I: FixedWidthInteger>(_ type: I.Type) -> I {
        guard let text = text(expected: "an integer") else { return 0 }
        guard let value = I(text.replacingUnderscores()) else {
            if Int(text) != nil {
                report("integer \(text) is out of range (\(I.min)…\(I.max))")
            } else {
                report("expected an integer, got '\(text)'")
            }
            session.substituted(path)
            return 0
        }
        return value
    }

    func double() -> Double {
        guard let text = text(expected: "a number") else { return 0 }
        guard let value = Double(text), value.isFinite else {
            report("expected a number, got '\(text)'")
            session.substituted(path)
            return 0
        }
        return value
    }
}

extension String {
    fileprivate func replacingUnderscores() -> String {
        contains("_") ? String(filter { $0 != "_" }) : self
    }
}

/// A coding key built from a string or an index.
struct PlainKey: CodingKey {
    var stringValue: String
    var intValue: Int?
    init(stringValue: String) { self.stringValue = stringValue }
    init(intValue: Int) {
        self.stringValue = "\(intValue)"
        self.intValue = intValue
    }
}

struct NodeKeyedContainer<Key: CodingKey>: KeyedDecodingContainerProtocol {
    let decoder: NodeDecoder
    let tracker: MappingTracker

    var codingPath: [any CodingKey] { decoder.codingPath }

    var allKeys: [Key] {
        tracker.pairs.compactMap { pair in
            tracker.asked.insert(pair.key)
            return Key(stringValue: pair.key)
        }
    }

    private func lookup(_ key: Key) -> Node? {
        tracker.asked.insert(key.stringValue)
        return tracker.pairs.last { $0.key == key.stringValue }?.value
    }

    func contains(_ key: Key) -> Bool {
        lookup(key) != nil
    }

    func decodeNil(forKey key: Key) throws -> Bool {
        guard let node = lookup(key) else { return true }
        return DecodingSession.isNull(node)
    }

    func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T { try decodeAny(type, forKey: key) }
    func decode(_ type: String.Type, forKey key: Key) throws -> String { try decodeAny(type, forKey: key) }
    func decode(_ type: Bool.Type, forKey key: Key) throws -> Bool { try decodeAny(type, forKey: key) }
    func decode(_ type: Int.Type, forKey key: Key) throws -> Int { try decodeAny(type, forKey: key) }
    func decode(_ type: Int8.Type, forKey key: Key) throws -> Int8 { try decodeAny(type, forKey: key) }
    func decode(_ type: Int16.Type, forKey key: Key) throws -> Int16 { try decodeAny(type, forKey: key) }
    func decode(_ type: Int32.Type, forKey key: Key) throws -> Int32 { try decodeAny(type, forKey: key) }
    func decode(_ type: Int64.Type, forKey key: Key) throws -> Int64 { try decodeAny(type, forKey: key) }
    func decode(_ type: UInt.Type, forKey key: Key) throws -> UInt { try decodeAny(type, forKey: key) }
    func decode(_ type: UInt8.Type, forKey key: Key) throws -> UInt8 { try decodeAny(type, forKey: key) }
    func decode(_ type: UInt16.Type, forKey key: Key) throws -> UInt16 { try decodeAny(type, forKey: key) }
    func decode(_ type: UInt32.Type, forKey key: Key) throws -> UInt32 { try decodeAny(type, forKey: key) }
    func decode(_ type: UInt64.Type, forKey key: Key) throws -> UInt64 { try decodeAny(type, forKey: key) }
    func decode(_ type: Double.Type, forKey key: Key) throws -> Double { try decodeAny(type, forKey: key) }
    func decode(_ type: Float.Type, forKey key: Key) throws -> Float { try decodeAny(type, forKey: key) }

    private func decodeAny<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T {
        guard let node = lookup(key) else {
            decoder.session.report(
                "missing required key '\(key.stringValue)'",
                mark: decoder.node.mark,
                path: decoder.path,
                plugin: decoder.plugin
            )
            decoder.session.substituted(decoder.path + [.key(key.stringValue)])
            if let primitive = try zeroPrimitive(type) { return primitive }
            if let placeholder = (T.self as? any ConfigPlaceholder.Type)?.configPlaceholder as? T { return placeholder }
            throw ReportedError()
        }
        return try decoder.decodeValue(type, node: node, path: decoder.path + [.key(key.stringValue)])
    }

    func decodeIfPresent<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T? {
        guard let node = lookup(key), !DecodingSession.isNull(node) else { return nil }
        return try decoder.decodeValue(type, node: node, path: decoder.path + [.key(key.stringValue)])
    }

    private func zeroPrimitive<T>(_ type: T.Type) throws -> T? {
        if T.self == String.self { return "" as? T }
        if T.self == Bool.self { return false as? T }
        if T.self == Int.self { return 0 as? T }
        if T.self == Double.self { return 0.0 as? T }
        return nil
    }

    func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws
        -> KeyedDecodingContainer<NestedKey>
    {
        guard let node = lookup(key) else {
            decoder.session.report("missing required key '\(key.stringValue)'", mark: decoder.node.mark, path: decoder.path, plugin: decoder.plugin)
            throw ReportedError()
        }
        let child = NodeDecoder(session: decoder.session, node: node, path: decoder.path + [.key(key.stringValue)], plugin: decoder.plugin)
        return try child.container(keyedBy: type)
    }

    func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
        guard let node = lookup(key) else {
            return NodeUnkeyedContainer(decoder: decoder, elements: [])
        }
        let child = NodeDecoder(session: decoder.session, node: node, path: decoder.path + [.key(key.stringValue)], plugin: decoder.plugin)
        return try child.unkeyedContainer()
    }

    func superDecoder() throws -> any Decoder { decoder }
    func superDecoder(forKey key: Key) throws -> any Decoder {
        guard let node = lookup(key) else { throw ReportedError() }
        return NodeDecoder(session: decoder.session, node: node, path: decoder.path + [.key(key.stringValue)], plugin: decoder.plugin)
    }
}

struct NodeUnkeyedContainer: UnkeyedDecodingContainer {
    let decoder: NodeDecoder
    let elements: [Node]
    var currentIndex = 0

    init(decoder: NodeDecoder, elements: [Node]) {
        self.decoder = decoder
        self.elements = elements
    }

    var codingPath: [any CodingKey] { decoder.codingPath }
    var count: Int? { elements.count }
    var isAtEnd: Bool { currentIndex >= elements.count }

    private mutating func next() throws -> (Node, [PathComponent]) {
        guard currentIndex < elements.count else {
            decoder.report("list has too few elements")
            throw ReportedError()
        }
        let index = currentIndex
        currentIndex += 1
        return (elements[index], decoder.path + [.index(index)])
    }

    mutating func decodeNil() throws -> Bool {
        guard currentIndex < elements.count else { return true }
        if DecodingSession.isNull(elements[currentIndex]) {
            currentIndex += 1
            return true
        }
        return false
    }

    mutating func decode<T: Decodable>(_ type: T.Type) throws -> T { try decodeAny(type) }
    mutating func decode(_ type: String.Type) throws -> String { try decodeAny(type) }
    mutating func decode(_ type: Bool.Type) throws -> Bool { try decodeAny(type) }
    mutating func decode(_ type: Int.Type) throws -> Int { try decodeAny(type) }
    mutating func decode(_ type: Int8.Type) throws -> Int8 { try decodeAny(type) }
    mutating func decode(_ type: Int16.Type) throws -> Int16 { try decodeAny(type) }
    mutating func decode(_ type: Int32.Type) throws -> Int32 { try decodeAny(type) }
    mutating func decode(_ type: Int64.Type) throws -> Int64 { try decodeAny(type) }
    mutating func decode(_ type: UInt.Type) throws -> UInt { try decodeAny(type) }
    mutating func decode(_ type: UInt8.Type) throws -> UInt8 { try decodeAny(type) }
    mutating func decode(_ type: UInt16.Type) throws -> UInt16 { try decodeAny(type) }
    mutating func decode(_ type: UInt32.Type) throws -> UInt32 { try decodeAny(type) }
    mutating func decode(_ type: UInt64.Type) throws -> UInt64 { try decodeAny(type) }
    mutating func decode(_ type: Double.Type) throws -> Double { try decodeAny(type) }
    mutating func decode(_ type: Float.Type) throws -> Float { try decodeAny(type) }

    private mutating func decodeAny<T: Decodable>(_ type: T.Type) throws -> T {
        let (node, path) = try next()
        return try decoder.decodeValue(type, node: node, path: path)
    }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws -> KeyedDecodingContainer<NestedKey> {
        let (node, path) = try next()
        return try NodeDecoder(session: decoder.session, node: node, path: path, plugin: decoder.plugin).container(keyedBy: type)
    }

    mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer {
        let (node, path) = try next()
        return try NodeDecoder(session: decoder.session, node: node, path: path, plugin: decoder.plugin).unkeyedContainer()
    }

    mutating func superDecoder() throws -> any Decoder {
        let (node, path) = try next()
        return NodeDecoder(session: decoder.session, node: node, path: path, plugin: decoder.plugin)
    }
}

struct NodeSingleValueContainer: SingleValueDecodingContainer {
    let decoder: NodeDecoder
    var codingPath: [any CodingKey] { decoder.codingPath }

    func decodeNil() -> Bool { DecodingSession.isNull(decoder.node) }

    func decode<T: Decodable>(_ type: T.Type) throws -> T { try decodeAny(type) }
    func decode(_ type: String.Type) throws -> String { try decodeAny(type) }
    func decode(_ type: Bool.Type) throws -> Bool { try decodeAny(type) }
    func decode(_ type: Int.Type) throws -> Int { try decodeAny(type) }
    func decode(_ type: Int8.Type) throws -> Int8 { try decodeAny(type) }
    func decode(_ type: Int16.Type) throws -> Int16 { try decodeAny(type) }
    func decode(_ type: Int32.Type) throws -> Int32 { try decodeAny(type) }
    func decode(_ type: Int64.Type) throws -> Int64 { try decodeAny(type) }
    func decode(_ type: UInt.Type) throws -> UInt { try decodeAny(type) }
    func decode(_ type: UInt8.Type) throws -> UInt8 { try decodeAny(type) }
    func decode(_ type: UInt16.Type) throws -> UInt16 { try decodeAny(type) }
    func decode(_ type: UInt32.Type) throws -> UInt32 { try decodeAny(type) }
    func decode(_ type: UInt64.Type) throws -> UInt64 { try decodeAny(type) }
    func decode(_ type: Double.Type) throws -> Double { try decodeAny(type) }
    func decode(_ type: Float.Type) throws -> Float { try decodeAny(type) }

    private func decodeAny<T: Decodable>(_ type: T.Type) throws -> T {
        if let primitive = try decoder.decodePrimitive(type) { return primitive }
        return try T(from: decoder)
    }
}

