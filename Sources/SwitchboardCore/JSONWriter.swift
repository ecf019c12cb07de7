import NIOCore

/// Writes ``JSONValue``s as compact JSON straight into a `ByteBuffer`.
///
/// No intermediate `String` is built: encoders call this once per event and variant.
public enum JSONWriter {
    /// Appends `value` as compact JSON.
    public static func write(_ value: JSONValue, into buffer: inout ByteBuffer) {
        switch value {
        case .null: buffer.writeStaticString("null")
        case .bool(let flag):
            if flag { buffer.writeStaticString("true") } else { buffer.writeStaticString("false") }
        case .int(let number): writeInteger(number, into: &buffer)
        case .double(let number): writeDouble(number, into: &buffer)
        case .string(let string): writeString(string, into: &buffer)
        case .array(let elements):
            buffer.writeInteger(UInt8(ascii: "["))
            for (i, element) in elements.enumerated() {
                if i > 0 { buffer.writeInteger(UInt8(ascii: ",")) }
                write(element, into: &buffer)
            }
            buffer.writeInteger(UInt8(ascii: "]"))
        case .object(let object):
            buffer.writeInteger(UInt8(ascii: "{"))
            for (i, entry) in object.entries.enumerated() {
                if i > 0 { buffer.writeInteger(UInt8(ascii: ",")) }
                writeString(entry.key, into: &buffer)
                buffer.writeInteger(UInt8(ascii: ":"))
                write(entry.value, into: &buffer)
            }
            buffer.writeInteger(UInt8(ascii: "}"))
        }
    }

    /// Returns `value` as a compact JSON string (for logs, tests and HTTP bodies).
    public static func string(_ value: JSONValue) -> String {
        var buffer = ByteBuffer()
        write(value, into: &buffer)
        return String(buffer: buffer)
    }

    /// Appends a decimal integer.
    public static func writeInteger(_ number: Int64, into buffer: inout ByteBuffer) {
        buffer.writeString(String(number))
    }

    /// Appends a double; non-finite values become `null` because JSON cannot express them.
    public static func writeDouble(_ number: Double, into buffer: inout ByteBuffer) {
        guard number.isFinite else {
            buffer.writeStaticString("null")
            return
        }
        if number.rounded() == number && abs(number) < 1e15 {
            buffer.writeString(String(Int64(number)))
            buffer.writeStaticString(".0")
        } else {
            buffer.writeString(String(number))
        }
    }

    private static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)

    /// Appends a quoted, escaped JSON string.
    public static func writeString(_ string: String, into buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt8(ascii: "\""))
        var utf8 = string.utf8
        let needsEscaping = utf8.contains { $0 < 0x20 || $0 == 0x22 || $0 == 0x5C }
        if !needsEscaping {
            buffer.writeString(string)
        } else {
            utf8 = string.utf8
            for byte in utf8 {
                switch byte {
                case 0x22: buffer.writeStaticString("\\\"")
                case 0x5C: buffer.writeStaticString("\\\\")
                case 0x0A: buffer.writeStaticString("\\n")
                case 0x0D: buffer.writeStaticString("\\r")
                case 0x09: buffer.writeStaticString("\\t")
                case 0x08: buffer.writeStaticString("\\b")
                case 0x0C: buffer.writeStaticString("\\f")
                case 0..<0x20:
                    buffer.writeStaticString("\\u00")
                    buffer.writeInteger(hexDigits[Int(byte >> 4)])
                    buffer.writeInteger(hexDigits[Int(byte & 0x0F)])
                default: buffer.writeInteger(byte)
                }
            }
        }
        buffer.writeInteger(UInt8(ascii: "\""))
    }
}
