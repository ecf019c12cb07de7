import NIOCore

/// One value of the Redis serialization protocol, RESP2 or RESP3.
public indirect enum RESPValue: Sendable, Equatable {
    case simpleString(String)
    case error(String)
    case integer(Int64)
    /// A bulk string; bytes are kept as they are (payloads need not be UTF-8).
    case bulkString([UInt8])
    case array([RESPValue])
    /// RESP2 null bulk string / null array, RESP3 `_`.
    case null
    case double(Double)
    case boolean(Bool)
    /// RESP3 big number, as its decimal text.
    case bigNumber(String)
    /// RESP3 verbatim string without its 3-letter format prefix.
    case verbatim(String)
    /// RESP3 map as key/value pairs in order.
    case map([RESPValue])
    case set([RESPValue])
    /// RESP3 out-of-band push (pub/sub messages when using RESP3).
    case push([RESPValue])

    /// Text of a simple, bulk or verbatim string (bulk strings must be UTF-8).
    public var string: String? {
        switch self {
        case .simpleString(let text), .verbatim(let text): return text
        case .bulkString(let bytes): return String(validating: bytes, as: UTF8.self)
        default: return nil
        }
    }

    /// Bytes of a bulk or simple string.
    public var bytes: [UInt8]? {
        switch self {
        case .bulkString(let bytes): return bytes
        case .simpleString(let text), .verbatim(let text): return Array(text.utf8)
        default: return nil
        }
    }

    /// Elements of an array, set or push.
    public var elements: [RESPValue]? {
        switch self {
        case .array(let items), .set(let items), .push(let items): return items
        default: return nil
        }
    }

    public var integer: Int64? {
        if case .integer(let value) = self { return value }
        return nil
    }
}

/// Why bytes from Redis are not RESP; the connection is closed when this happens.
public struct RESPError: Error, Sendable, Equatable, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// Incremental RESP2/RESP3 parser with limits: it never traps on any byte sequence and
/// never allocates from a claimed length before the bytes are there.
public struct RESPParser: Sendable {
    /// Largest bulk string accepted.
    public var maximumBulkLength: Int
    /// Largest element count of one aggregate.
    public var maximumAggregateCount: Int
    /// Deepest nesting of aggregates.
    public var maximumDepth: Int

    public init(maximumBulkLength: Int = 64 << 20, maximumAggregateCount: Int = 1 << 20, maximumDepth: Int = 32) {
        self.maximumBulkLength = maximumBulkLength
        self.maximumAggregateCount = maximumAggregateCount
        self.maximumDepth = maximumDepth
    }

    /// Parses one complete value from the buffer's readable bytes and consumes it; returns
    /// `nil` (consuming nothing) when more bytes are needed.
    public func parse(_ buffer: inout ByteBuffer) throws(RESPError) -> RESPValue? {
        var cursor = buffer.readerIndex
        guard let value = try parseValue(buffer, at: &cursor, depth: 0) else { return nil }
        buffer.moveReaderIndex(to: cursor)
        return value
    }

    /// Reads a CRLF-terminated line starting at `cursor`; `nil` if incomplete.
    private func line(_ buffer: ByteBuffer, at cursor: inout Int) throws(RESPError) -> [UInt8]? {
        let end = buffer.writerIndex
        var index = cursor
        while index < end {
            guard let byte = buffer.getInteger(at: index, as: UInt8.self) else { return nil }
            if byte == UInt8(ascii: "\r") {
                guard index + 1 < end else { return nil }
                guard buffer.getInteger(at: index + 1, as: UInt8.self) == UInt8(ascii: "\n") else {
                    throw RESPError("CR without LF")
                }
                let bytes = buffer.getBytes(at: cursor, length: index - cursor) ?? []
                cursor = index + 2
                return bytes
            }
            if byte == UInt8(ascii: "\n") { throw RESPError("LF without CR") }
            if index - cursor > 64 * 1024 { throw RESPError("line longer than 64 KiB") }
            index += 1
        }
        return nil
    }

    private func number(_ bytes: [UInt8]) throws(RESPError) -> Int64 {
        guard !bytes.isEmpty, bytes.count <= 20, let text = String(validating: bytes, as: UTF8.self), let value = Int64(text) else {
            throw RESPError("invalid integer")
        }
        return value
    }

    private func text(_ bytes: [UInt8]) throws(RESPError) -> String {
        guard let text = String(validating: bytes, as: UTF8.self) else { throw RESPError("invalid UTF-8 in a simple string") }
        return text
    }

    private func parseValue(_ buffer: ByteBuffer, at cursor: inout Int, depth: Int) throws(RESPError) -> RESPValue? {
        guard depth <= maximumDepth else { throw RESPError("nesting deeper than \(maximumDepth)") }
        guard cursor < buffer.writerIndex, let marker = buffer.getInteger(at: cursor, as: UInt8.self) else { return nil }
        var position = cursor + 1
        guard let header = try line(buffer, at: &position) else { return nil }
        let value: RESPValue
        switch marker {
        case UInt8(ascii: "+"): value = .simpleString(try text(header))
        case UInt8(ascii: "-"): value = .error(try text(header))
        case UInt8(ascii: ":"): value = .integer(try number(header))
        case UInt8(ascii: "_"):
            guard header.isEmpty else { throw RESPError("null with data") }
            value = .null
        case UInt8(ascii: "#"):
            switch header {
            case [UInt8(ascii: "t")]: value = .boolean(true)
            case [UInt8(ascii: "f")]: value = .boolean(false)
            default: throw RESPError("invalid boolean")
            }
        case UInt8(ascii: ","):
            let spelled = try text(header)
            switch spelled {
            case "inf": value = .double(.infinity)
            case "-inf": value = .double(-.infinity)
            case "nan": value = .double(.nan)
            default:
                guard let number = Double(spelled) else { throw RESPError("invalid double") }
                value = .double(number)
            }
        case UInt8(ascii: "("):
            let digits = try text(header)
            guard !digits.isEmpty, digits.drop(while: { $0 == "-" }).allSatisfy(\.isNumber) else { throw RESPError("invalid big number") }
            value = .bigNumber(digits)
        case UInt8(ascii: "$"), UInt8(ascii: "="), UInt8(ascii: "!"):
            let length = try number(header)
            if length == -1 && marker == UInt8(ascii: "$") {
                value = .null
                break
            }
            guard length >= 0, length <= maximumBulkLength else { throw RESPError("bulk length \(length) out of range") }
            let count = Int(length)
            guard buffer.writerIndex - position >= count + 2 else { return nil }
            guard let bytes = buffer.getBytes(at: position, length: count),
                buffer.getInteger(at: position + count, as: UInt8.self) == UInt8(ascii: "\r"),
                buffer.getInteger(at: position + count + 1, as: UInt8.self) == UInt8(ascii: "\n")
            else { throw RESPError("bulk string not terminated by CRLF") }
            position += count + 2
            switch marker {
            case UInt8(ascii: "$"): value = .bulkString(bytes)
            case UInt8(ascii: "!"): value = .error(String(decoding: bytes, as: UTF8.self))
            default:
                guard bytes.count >= 4, bytes[3] == UInt8(ascii: ":") else { throw RESPError("invalid verbatim string") }
                value = .verbatim(String(decoding: bytes[4...], as: UTF8.self))
            }
        case UInt8(ascii: "*"), UInt8(ascii: "~"), UInt8(ascii: ">"), UInt8(ascii: "%"), UInt8(ascii: "|"):
            let declared = try number(header)
            if declared == -1 && marker == UInt8(ascii: "*") {
                value = .null
                break
            }
            let isMap = marker == UInt8(ascii: "%") || marker == UInt8(ascii: "|")
            guard declared >= 0, declared <= Int64(maximumAggregateCount) else { throw RESPError("aggregate size \(declared) out of range") }
            let count = Int(declared) * (isMap ? 2 : 1)
            var items: [RESPValue] = []
            // Reserve only what the bytes present could hold (each element is ≥ 3 bytes).
            items.reserveCapacity(min(count, (buffer.writerIndex - position) / 3))
            for _ in 0..<count {
                guard let item = try parseValue(buffer, at: &position, depth: depth + 1) else { return nil }
                items.append(item)
            }
            switch marker {
            case UInt8(ascii: "*"): value = .array(items)
            case UInt8(ascii: "~"): value = .set(items)
            case UInt8(ascii: ">"): value = .push(items)
            case UInt8(ascii: "|"):
                // Attributes annotate the value that follows; skip them.
                guard let annotated = try parseValue(buffer, at: &position, depth: depth + 1) else { return nil }
                value = annotated
            default: value = .map(items)
            }
        default:
            throw RESPError("unknown type byte 0x\(String(marker, radix: 16))")
        }
        cursor = position
        return value
    }
}

/// Encodes commands as RESP arrays of bulk strings.
public enum RESPCommand {
    public static func write(_ arguments: [RESPArgument], into buffer: inout ByteBuffer) {
        buffer.writeString("*\(arguments.count)\r\n")
        for argument in arguments {
            switch argument {
            case .string(let text):
                buffer.writeString("$\(text.utf8.count)\r\n")
                buffer.writeString(text)
            case .bytes(let bytes):
                buffer.writeString("$\(bytes.count)\r\n")
                buffer.writeBytes(bytes)
            }
            buffer.writeStaticString("\r\n")
        }
    }
}

/// One argument of a command.
public enum RESPArgument: Sendable, ExpressibleByStringLiteral {
    case string(String)
    case bytes([UInt8])
    public init(stringLiteral value: String) { self = .string(value) }
}
