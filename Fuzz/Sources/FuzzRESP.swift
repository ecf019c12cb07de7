import NIOCore
import SwitchboardRedis

/// `resp`: the bytes as replies from a Redis server, parsed the way the connection handler
/// does: values one after another from a buffer that grows as reads arrive.
///
/// Layout: byte 0 picks where the stream is cut in two reads, byte 1 picks the parser's
/// limits (bits 0–2 bulk length, 3–5 aggregate count, 6–7 depth; all ones = generous
/// limits), the rest is the stream.
///
/// Invariants: a parse that returns `nil` or throws consumes nothing; a value consumes at
/// least 3 bytes and never more than is there; values respect the limits; feeding the
/// stream in two pieces gives exactly the values, error and consumed count that one piece
/// gives; `RESPCommand.write` output parses back to the array of bulk strings.
func fuzzRESP(_ input: UnsafeRawBufferPointer) {
    guard input.count >= 2 else { return }
    let limits = input[1]
    let parser = RESPParser(
        maximumBulkLength: respBulkLimits[Int(limits & 0x07)],
        maximumAggregateCount: respAggregateLimits[Int((limits >> 3) & 0x07)],
        maximumDepth: respDepthLimits[Int(limits >> 6)]
    )
    let stream = UnsafeRawBufferPointer(rebasing: input[2...])
    let cut = Int(input[0]) % (stream.count + 1)

    var whole = ByteBuffer(bytes: stream)
    var inOnePiece = RESPOutcome()
    parseAvailable(parser, &whole, into: &inOnePiece)

    var growing = ByteBuffer(bytes: stream[..<cut])
    var inTwoPieces = RESPOutcome()
    parseAvailable(parser, &growing, into: &inTwoPieces)
    if inTwoPieces.error == nil {
        growing.writeBytes(stream[cut...])
        parseAvailable(parser, &growing, into: &inTwoPieces)
    }
    invariant(inTwoPieces.consumed == inOnePiece.consumed, "cut at \(cut): consumed \(inTwoPieces.consumed), in one piece \(inOnePiece.consumed)")
    invariant(inTwoPieces.error == inOnePiece.error, "cut at \(cut): error \(String(describing: inTwoPieces.error)), in one piece \(String(describing: inOnePiece.error))")
    invariant(inTwoPieces.values.count == inOnePiece.values.count, "cut at \(cut): \(inTwoPieces.values.count) values, in one piece \(inOnePiece.values.count)")
    for (piecewise, once) in zip(inTwoPieces.values, inOnePiece.values) {
        invariant(sameRESP(piecewise, once), "cut at \(cut): parsed \(piecewise), in one piece \(once)")
    }

    checkCommandRoundTrip(stream, cut: cut)
}

// Indexed by the limits byte; the last entry of each is the connection's default or more.
private let respBulkLimits = [0, 1, 3, 16, 64, 512, 4096, 64 << 20]
private let respAggregateLimits = [0, 1, 2, 3, 8, 64, 1024, 1 << 20]
private let respDepthLimits = [0, 1, 4, 32]

/// What parsing a stream produced until it needed more bytes or failed.
private struct RESPOutcome {
    var values: [RESPValue] = []
    var error: RESPError?
    var consumed = 0
}

/// Parses values until the parser needs more bytes or throws, checking each step.
private func parseAvailable(_ parser: RESPParser, _ buffer: inout ByteBuffer, into outcome: inout RESPOutcome) {
    while outcome.error == nil {
        let before = buffer.readerIndex
        let parsed: RESPValue?
        do {
            parsed = try parser.parse(&buffer)
        } catch {
            invariant(buffer.readerIndex == before, "a parse that threw (\(error)) consumed bytes")
            outcome.error = error
            return
        }
        guard let value = parsed else {
            invariant(buffer.readerIndex == before, "a parse that needs more bytes consumed bytes")
            return
        }
        let consumed = buffer.readerIndex - before
        invariant(consumed >= 3, "a value took \(consumed) bytes; the shortest RESP value has 3")
        invariant(buffer.readerIndex <= buffer.writerIndex, "the parser moved past the bytes it was given")
        checkLimits(value, parser)
        let nesting = respNesting(value)
        invariant(nesting <= parser.maximumDepth + 1, "a value nested \(nesting) deep with maximumDepth \(parser.maximumDepth)")
        outcome.values.append(value)
        outcome.consumed += consumed
    }
}

/// Bulk lengths and aggregate counts stay within the parser's limits.
private func checkLimits(_ value: RESPValue, _ parser: RESPParser) {
    switch value {
    case .bulkString(let bytes):
        invariant(bytes.count <= parser.maximumBulkLength, "bulk string of \(bytes.count) bytes, limit \(parser.maximumBulkLength)")
    case .array(let items), .set(let items), .push(let items):
        invariant(items.count <= parser.maximumAggregateCount, "aggregate of \(items.count), limit \(parser.maximumAggregateCount)")
        for item in items { checkLimits(item, parser) }
    case .map(let items):
        invariant(items.count % 2 == 0, "a map with \(items.count) keys and values")
        invariant(items.count / 2 <= parser.maximumAggregateCount, "map of \(items.count / 2) pairs, limit \(parser.maximumAggregateCount)")
        for item in items { checkLimits(item, parser) }
    default:
        break
    }
}

/// Aggregate nesting: 0 for a scalar, 1 + the deepest element for an aggregate.
private func respNesting(_ value: RESPValue) -> Int {
    switch value {
    case .array(let items), .set(let items), .push(let items), .map(let items):
        return 1 + (items.map { respNesting($0) }.max() ?? 0)
    default:
        return 0
    }
}

/// `==`, except that NaN equals NaN (RESP3 `,nan`).
private func sameRESP(_ lhs: RESPValue, _ rhs: RESPValue) -> Bool {
    switch (lhs, rhs) {
    case (.double(let l), .double(let r)):
        return l == r || (l.isNaN && r.isNaN)
    case (.array(let l), .array(let r)), (.set(let l), .set(let r)), (.push(let l), .push(let r)), (.map(let l), .map(let r)):
        return l.count == r.count && zip(l, r).allSatisfy { sameRESP($0, $1) }
    default:
        return lhs == rhs
    }
}

/// Commands the gateway sends, written by `RESPCommand` from the input's bytes, parse back
/// to the array of bulk strings they encode.
private func checkCommandRoundTrip(_ stream: UnsafeRawBufferPointer, cut: Int) {
    let first = Array(stream[..<cut])
    let second = Array(stream[cut...])
    let text = String(decoding: second, as: UTF8.self)
    var encoded = ByteBuffer()
    RESPCommand.write([.string("SUBSCRIBE"), .bytes(first), .string(text)], into: &encoded)
    let expected = RESPValue.array([.bulkString(Array("SUBSCRIBE".utf8)), .bulkString(first), .bulkString(Array(text.utf8))])
    let parsed: RESPValue?
    do {
        parsed = try RESPParser().parse(&encoded)
    } catch {
        fatalError("fuzz invariant violated: RESPCommand output does not parse (\(error)): \(describeBuffer(encoded))")
    }
    invariant(parsed == expected, "RESPCommand round trip gave \(String(describing: parsed))")
    invariant(encoded.readableBytes == 0, "RESPCommand output has \(encoded.readableBytes) bytes left after one value")
}
