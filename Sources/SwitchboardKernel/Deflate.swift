import CZlib
import NIOCore

/// Raw-deflate settings of one compressor (RFC 7692 §7.2: no zlib header, sync flush).
public struct DeflateSettings: Sendable, Hashable {
    /// LZ77 window as a power of two (9–15; zlib cannot produce raw deflate with 8).
    public var windowBits: Int
    /// Compression level 1–9.
    public var level: Int
    /// zlib memLevel 1–9 (memory for the compressor's internal state).
    public var memLevel: Int

    public init(windowBits: Int, level: Int, memLevel: Int) {
        self.windowBits = windowBits
        self.level = level
        self.memLevel = memLevel
    }

    /// zlib's documented deflate state size: (1 << (windowBits+2)) + (1 << (memLevel+9)) + 6 KiB.
    public var compressorMemory: Int { (1 << (windowBits + 2)) + (1 << (memLevel + 9)) + 6 * 1024 }

    /// zlib's documented inflate state size: (1 << windowBits) + 7 KiB.
    public static func decompressorMemory(windowBits: Int) -> Int { (1 << windowBits) + 7 * 1024 }
}

/// A raw-deflate compressor producing RFC 7692 message payloads.
///
/// Not thread-safe: one owner (a connection, or a shared variant behind a lock).
public final class Deflater {
    private var stream = z_stream()
    private var ready = false
    public let settings: DeflateSettings

    /// `nil` if zlib refuses the settings (or is out of memory).
    public init?(settings: DeflateSettings) {
        self.settings = settings
        let status = deflateInit2_(
            &stream, Int32(settings.level), Z_DEFLATED, -Int32(settings.windowBits), Int32(settings.memLevel),
            Z_DEFAULT_STRATEGY, zlibVersion(), Int32(MemoryLayout<z_stream>.size)
        )
        guard status == Z_OK else { return nil }
        ready = true
    }

    deinit {
        if ready { deflateEnd(&stream) }
    }

    /// Appends the compressed form of `input` (sync-flushed, with the final `00 00 ff ff`
    /// removed as RFC 7692 §7.2.1 requires). With `resetAfter` the next message starts
    /// with an empty window (no context takeover).
    public func compress(_ input: ByteBuffer, into output: inout ByteBuffer, resetAfter: Bool) {
        let start = output.writerIndex
        input.withUnsafeReadableBytes { source in
            stream.next_in = UnsafeMutablePointer(mutating: source.bindMemory(to: Bytef.self).baseAddress)
            stream.avail_in = uInt(source.count)
            repeat {
                output.reserveCapacity(minimumWritableBytes: max(256, Int(stream.avail_in) / 2 + 64))
                let written = output.writeWithUnsafeMutableBytes(minimumWritableBytes: 0) { target in
                    stream.next_out = target.bindMemory(to: Bytef.self).baseAddress
                    stream.avail_out = uInt(target.count)
                    _ = deflate(&stream, Z_SYNC_FLUSH)
                    return target.count - Int(stream.avail_out)
                }
                _ = written
            } while stream.avail_in > 0 || stream.avail_out == 0
        }
        stream.next_in = nil
        stream.next_out = nil
        // Drop the empty stored block's 00 00 ff ff trailer.
        if output.writerIndex - start >= 4 { output.moveWriterIndex(to: output.writerIndex - 4) }
        if resetAfter { deflateReset(&stream) }
    }
}

/// Why an inbound compressed message was refused.
public enum InflateError: Error, Equatable, Sendable {
    /// The inflated message would exceed the limit (a decompression bomb or just too big).
    case tooLarge
    /// Not valid deflate data.
    case corrupt
}

/// A raw-deflate decompressor for inbound RFC 7692 messages, with a hard output limit.
public final class Inflater {
    private var stream = z_stream()
    private var ready = false
    public let windowBits: Int

    public init?(windowBits: Int) {
        self.windowBits = windowBits
        let status = inflateInit2_(&stream, -Int32(windowBits), zlibVersion(), Int32(MemoryLayout<z_stream>.size))
        guard status == Z_OK else { return nil }
        ready = true
    }

    deinit {
        if ready { inflateEnd(&stream) }
    }

    private static let tail: [UInt8] = [0x00, 0x00, 0xFF, 0xFF]

    /// Inflates one message's payload; stops as soon as the output would pass `limit`.
    ///
    /// A message may end its deflate stream (a final block, RFC 7692 §7.2.3.4): the stream
    /// is then reset for the next message, and bytes after the end are refused as corrupt,
    /// except the `00 00 ff ff` tail this method appends itself.
    public func inflate(_ input: ByteBuffer, limit: Int, resetAfter: Bool) throws(InflateError) -> ByteBuffer {
        var output = ByteBuffer()
        var failure: InflateError?
        var streamEnded = false
        for (index, chunk) in [Array(input.readableBytesView), Self.tail].enumerated() where failure == nil && !streamEnded {
            chunk.withUnsafeBufferPointer { source in
                stream.next_in = UnsafeMutablePointer(mutating: source.baseAddress)
                stream.avail_in = uInt(source.count)
                while failure == nil && stream.avail_in > 0 {
                    let room = min(16 * 1024, limit + 1 - output.readableBytes)
                    guard room > 0 else {
                        failure = .tooLarge
                        break
                    }
                    var status: Int32 = Z_OK
                    output.writeWithUnsafeMutableBytes(minimumWritableBytes: room) { target in
                        stream.next_out = target.bindMemory(to: Bytef.self).baseAddress
                        stream.avail_out = uInt(room)
                        status = CZlib.inflate(&stream, Z_SYNC_FLUSH)
                        return room - Int(stream.avail_out)
                    }
                    if output.readableBytes > limit {
                        failure = .tooLarge
                    } else if status == Z_STREAM_END {
                        streamEnded = true
                        // Data of the message itself after the end of its stream is corrupt.
                        if index == 0 && stream.avail_in > 0 { failure = .corrupt }
                        break
                    } else if status == Z_BUF_ERROR && stream.avail_out > 0 {
                        break  // needs more input than this chunk has
                    } else if status != Z_OK && status != Z_BUF_ERROR {
                        failure = .corrupt
                    }
                }
            }
        }
        stream.next_in = nil
        stream.next_out = nil
        if let failure {
            inflateReset(&stream)
            throw failure
        }
        if resetAfter || streamEnded { inflateReset(&stream) }
        return output
    }
}
