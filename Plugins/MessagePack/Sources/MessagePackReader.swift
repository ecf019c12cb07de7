import CMsgPack
import NIOCore
import SwitchboardCore

/// Why a MessagePack payload was refused.
public struct MessagePackError: Error, Equatable, Sendable {
    public let message: String
}

/// Decodes one MessagePack value (a client message) into a ``JSONValue``.
///
/// msgpack-c's C unpacker allocates containers from the sizes the input *claims*, so a
/// five-byte message announcing a 50-million-element array would make it allocate
/// gigabytes. ``validate`` therefore walks the bytes first with hard bounds (every length
/// and count must fit in what is left, nesting at most ``maximumDepth``) and only input that
/// passes reaches msgpack-c.
public enum MessagePackReader {
    public static let maximumDepth = 32

    /// Reads one complete value nesting at most `maxDepth` levels (at most ``maximumDepth``).
    public static func read(_ payload: ByteBuffer, maxDepth: Int = maximumDepth) -> Result<JSONValue, MessagePackError> {
        let bytes = Array(payload.readableBytesView)
        if let problem = validate(bytes, maxDepth: maxDepth) { return .failure(MessagePackError(message: problem)) }
        return bytes.withUnsafeBufferPointer { buffer -> Result<JSONValue, MessagePackError> in
            var unpacked = msgpack_unpacked()
            msgpack_unpacked_init(&unpacked)
            defer { msgpack_unpacked_destroy(&unpacked) }
            var offset = 0
            let status = buffer.baseAddress.map { base in
                base.withMemoryRebound(to: CChar.self, capacity: buffer.count) {
                    msgpack_unpack_next(&unpacked, $0, buffer.count, &offset)
                }
            } ?? MSGPACK_UNPACK_CONTINUE
            guard status == MSGPACK_UNPACK_SUCCESS else {
                return .failure(MessagePackError(message: "truncated or malformed data"))
            }
            guard offset == buffer.count else {
                return .failure(MessagePackError(message: "unexpected data after the value"))
            }
            return convert(unpacked.data, depth: 0)
        }
    }

    private static func convert(_ object: msgpack_object, depth: Int) -> Result<JSONValue, MessagePackError> {
        guard depth <= maximumDepth else { return .failure(MessagePackError(message: "nesting too deep")) }
        switch object.type {
        case MSGPACK_OBJECT_NIL: return .success(.null)
        case MSGPACK_OBJECT_BOOLEAN: return .success(.bool(object.via.boolean))
        case MSGPACK_OBJECT_POSITIVE_INTEGER:
            guard object.via.u64 <= UInt64(Int64.max) else { return .failure(MessagePackError(message: "integer out of range")) }
            return .success(.int(Int64(object.via.u64)))
        case MSGPACK_OBJECT_NEGATIVE_INTEGER: return .success(.int(object.via.i64))
        case MSGPACK_OBJECT_FLOAT32, MSGPACK_OBJECT_FLOAT64: return .success(.double(object.via.f64))
        case MSGPACK_OBJECT_STR:
            return string(object.via.str).map { .string($0) }
        case MSGPACK_OBJECT_ARRAY:
            var elements: [JSONValue] = []
            let array = object.via.array
            for index in 0..<Int(array.size) {
                guard let element = array.ptr?[index] else { return .failure(MessagePackError(message: "malformed array")) }
                switch convert(element, depth: depth + 1) {
                case .success(let value): elements.append(value)
                case .failure(let error): return .failure(error)
                }
            }
            return .success(.array(elements))
        case MSGPACK_OBJECT_MAP:
            var entries: [(key: String, value: JSONValue)] = []
            let map = object.via.map
            for index in 0..<Int(map.size) {
                guard let pair = map.ptr?[index] else { return .failure(MessagePackError(message: "malformed map")) }
                guard pair.key.type == MSGPACK_OBJECT_STR else { return .failure(MessagePackError(message: "map keys must be strings")) }
                let key: String
                switch string(pair.key.via.str) {
                case .success(let text): key = text
                case .failure(let error): return .failure(error)
                }
                switch convert(pair.val, depth: depth + 1) {
                case .success(let value): entries.append((key, value))
                case .failure(let error): return .failure(error)
                }
            }
            return .success(.object(JSONObject(entries)))
        case MSGPACK_OBJECT_BIN: return .failure(MessagePackError(message: "binary values are not accepted"))
        case MSGPACK_OBJECT_EXT: return .failure(MessagePackError(message: "extension types are not accepted"))
        default: return .failure(MessagePackError(message: "unknown type"))
        }
    }

    private static func string(_ value: msgpack_object_str) -> Result<String, MessagePackError> {
        guard value.size > 0 else { return .success("") }
        guard let pointer = value.ptr else { return .failure(MessagePackError(message: "malformed string")) }
        let bytes = UnsafeRawBufferPointer(start: pointer, count: Int(value.size))
        guard let text = String(validating: bytes, as: UTF8.self) else {
            return .failure(MessagePackError(message: "invalid UTF-8 in string"))
        }
        return .success(text)
    }

    /// Returns a problem description, or `nil` when `bytes` hold exactly one well-bounded value.
    public static func validate(_ bytes: [UInt8], maxDepth: Int = maximumDepth) -> String? {
        let maxDepth = max(1, min(maxDepth, maximumDepth))
        var index = 0
        var pending = 1  // values still to read at the current nesting
        var stack: [Int] = []  // pending counts of the enclosing containers
        func need(_ count: Int) -> Bool { count >= 0 && bytes.count - index >= count }
        func bigEndian(_ width: Int) -> Int? {
            guard need(width) else { return nil }
            var value = 0
            for offset in 0..<width { value = value << 8 | Int(bytes[index + offset]) }
            index += width
            return value
        }
        while true {
            while pending == 0 {
                guard let outer = stack.popLast() else {
                    return index == bytes.count ? nil : "unexpected data after the value"
                }
                pending = outer
            }
            guard index < bytes.count else { return "truncated data" }
            let byte = bytes[index]
            index += 1
            pending -= 1
            var skip = 0
            var children = 0
            switch byte {
            case 0x00...0x7F, 0xE0...0xFF, 0xC0, 0xC2, 0xC3: break
            case 0x80...0x8F: children = Int(byte & 0x0F) * 2
            case 0x90...0x9F: children = Int(byte & 0x0F)
            case 0xA0...0xBF: skip = Int(byte & 0x1F)
            case 0xC4, 0xD9: guard let n = bigEndian(1) else { return "truncated data" }; skip = n
            case 0xC5, 0xDA: guard let n = bigEndian(2) else { return "truncated data" }; skip = n
            case 0xC6, 0xDB: guard let n = bigEndian(4) else { return "truncated data" }; skip = n
            case 0xC7: guard let n = bigEndian(1) else { return "truncated data" }; skip = n + 1
            case 0xC8: guard let n = bigEndian(2) else { return "truncated data" }; skip = n + 1
            case 0xC9: guard let n = bigEndian(4) else { return "truncated data" }; skip = n + 1
            case 0xCA: skip = 4
            case 0xCB: skip = 8
            case 0xCC, 0xD0: skip = 1
            case 0xCD, 0xD1: skip = 2
            case 0xCE, 0xD2: skip = 4
            case 0xCF, 0xD3: skip = 8
            case 0xD4: skip = 2
            case 0xD5: skip = 3
            case 0xD6: skip = 5
            case 0xD7: skip = 9
            case 0xD8: skip = 17
            case 0xDC: guard let n = bigEndian(2) else { return "truncated data" }; children = n
            case 0xDD: guard let n = bigEndian(4) else { return "truncated data" }; children = n
            case 0xDE: guard let n = bigEndian(2) else { return "truncated data" }; children = n * 2
            case 0xDF: guard let n = bigEndian(4) else { return "truncated data" }; children = n * 2
            default: return "invalid type byte 0x\(String(byte, radix: 16))"
            }
            guard need(skip) else { return "truncated data" }
            index += skip
            if children > 0 {
                // Every element takes at least one byte: a count larger than what is left is a lie.
                guard need(children) else { return "container claims more elements than the message holds" }
                guard stack.count < maxDepth else { return "nesting deeper than \(maxDepth) levels" }
                stack.append(pending)
                pending = children
            }
        }
    }
}
