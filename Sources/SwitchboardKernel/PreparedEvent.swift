import NIOConcurrencyHelpers
import NIOCore
import Synchronization
import SwitchboardCore

/// Identifies one wire form of an event: an encoder, optionally with permessage-deflate
/// settings. Variants are numbered densely by the kernel's ``VariantTable``.
public struct VariantID: Hashable, Sendable {
    public let index: Int
    public init(index: Int) { self.index = index }
}

/// Compression settings shared by a group of variants (one per endpoint configuration).
public struct CompressionProfile: Hashable, Sendable {
    public var level: Int
    public var memLevel: Int
    /// Payloads smaller than this are sent uncompressed.
    public var minSize: Int

    public init(level: Int, memLevel: Int, minSize: Int) {
        self.level = level
        self.memLevel = memLevel
        self.minSize = minSize
    }

    /// Server windows a client may ask for (zlib's raw deflate supports 9–15).
    public static let windowBits = 9...15
}

/// The wire forms the kernel can build, fixed at start-up: for every encoder one plain
/// variant, and one per compression profile and window size. Frames are built lazily, so
/// unused variants cost nothing.
public struct VariantTable: Sendable {
    /// One wire form.
    public struct Entry: Sendable {
        public let encoderIndex: Int
        public let encoder: any EventEncoder
        public let deflate: DeflateSettings?
        public let minSize: Int
        let compressor: SharedDeflater?
    }

    public let encoders: [any EventEncoder]
    public let entries: [Entry]
    private let plainIndex: [String: Int]
    private let compressedIndex: [CompressedKey: Int]

    private struct CompressedKey: Hashable {
        let encoder: String
        let profile: CompressionProfile
        let windowBits: Int
    }

    public init(encoders: [any EventEncoder], compressionProfiles: [CompressionProfile] = []) {
        var entries: [Entry] = []
        var plain: [String: Int] = [:]
        var compressed: [CompressedKey: Int] = [:]
        for (encoderIndex, encoder) in encoders.enumerated() {
            plain[encoder.variantKey] = entries.count
            entries.append(Entry(encoderIndex: encoderIndex, encoder: encoder, deflate: nil, minSize: 0, compressor: nil))
            for profile in Set(compressionProfiles) {
                for bits in CompressionProfile.windowBits {
                    let settings = DeflateSettings(windowBits: bits, level: profile.level, memLevel: profile.memLevel)
                    compressed[CompressedKey(encoder: encoder.variantKey, profile: profile, windowBits: bits)] = entries.count
                    entries.append(
                        Entry(
                            encoderIndex: encoderIndex, encoder: encoder, deflate: settings, minSize: profile.minSize,
                            compressor: SharedDeflater(settings: settings)
                        )
                    )
                }
            }
        }
        self.encoders = encoders
        self.entries = entries
        self.plainIndex = plain
        self.compressedIndex = compressed
    }

    /// Convenience for one plain variant per encoder.
    public init(encoders: [any EventEncoder]) {
        self.init(encoders: encoders, compressionProfiles: [])
    }

    /// The uncompressed variant of the encoder whose ``EventEncoder/variantKey`` is `name`
    /// (its name, unless it leaves something out of the envelope).
    public func variant(forEncoder name: String) -> VariantID? {
        plainIndex[name].map(VariantID.init(index:))
    }

    /// The shared-compression variant for `name`, `profile` and a server window.
    public func variant(forEncoder name: String, profile: CompressionProfile, windowBits: Int) -> VariantID? {
        compressedIndex[CompressedKey(encoder: name, profile: profile, windowBits: windowBits)].map(VariantID.init(index:))
    }

    public var count: Int { entries.count }
}

/// A compressor shared by every connection of one variant (no context takeover, so the
/// output depends only on the input). Used under its own lock, once per event.
final class SharedDeflater: @unchecked Sendable {
    private let lock = NIOLock()
    private let settings: DeflateSettings
    private var deflater: Deflater?

    init(settings: DeflateSettings) {
        self.settings = settings
    }

    func compress(_ payload: ByteBuffer, into output: inout ByteBuffer) -> Bool {
        lock.withLock {
            if deflater == nil { deflater = Deflater(settings: settings) }
            guard let deflater else { return false }
            deflater.compress(payload, into: &output, resetAfter: true)
            return true
        }
    }
}

/// One published event plus its frames, built lazily at most once per variant and shared
/// by every recipient on that variant, on every event loop. The encoder runs once per
/// encoder (the uncompressed frame's payload feeds the compressed variants).
public final class PreparedEvent: Sendable {
    public let event: Event
    private let table: VariantTable
    private let state: NIOLockedValueBox<State>
    private let counters: KernelCounters

    private struct State {
        var plainFrames: [ByteBuffer?]
        var frames: [ByteBuffer?]
        /// `data: <payload>\n\n` for Server-Sent Events, built once.
        var sse: ByteBuffer?
    }

    /// When the event entered the kernel (monotonic nanoseconds), for the publish → write
    /// latency.
    public let createdAt = NIODeadline.now().uptimeNanoseconds

    public init(event: Event, table: VariantTable, counters: KernelCounters = KernelCounters()) {
        self.event = event
        self.table = table
        self.counters = counters
        self.state = NIOLockedValueBox(State(plainFrames: Array(repeating: nil, count: table.encoders.count), frames: Array(repeating: nil, count: table.count)))
    }

    /// The event as one Server-Sent Events field, `data: <payload of variant>\n\n`, built on
    /// first use and shared by every SSE client (their `id:` lines are their own). The
    /// variant must be a plain text one (JSON): its compact payload has no line break.
    public func sseData(for variant: VariantID) -> ByteBuffer {
        if let cached = state.withLockedValue({ $0.sse }) { return cached }
        var data = ByteBuffer()
        guard let payload = ServerFrame.payload(of: frame(for: variant)) else { return data }
        data.reserveCapacity(payload.readableBytes + 8)
        data.writeStaticString("data: ")
        data.writeImmutableBuffer(payload)
        data.writeStaticString("\n\n")
        return state.withLockedValue { state in
            if let cached = state.sse { return cached }
            state.sse = data
            counters.frameBuilds.add(1, ordering: .relaxed)
            return data
        }
    }

    /// The complete WebSocket frame for `variant`, building it on first use.
    public func frame(for variant: VariantID) -> ByteBuffer {
        state.withLockedValue { state in
            guard variant.index >= 0 && variant.index < state.frames.count else { return ByteBuffer() }
            if let frame = state.frames[variant.index] { return frame }
            let entry = table.entries[variant.index]
            let plain: ByteBuffer
            if let cached = state.plainFrames[entry.encoderIndex] {
                plain = cached
            } else {
                let encoder = entry.encoder
                let event = self.event
                plain = ServerFrame.make(opcode: encoder.frameKind == .text ? .text : .binary) { buffer in
                    encoder.encode(event, into: &buffer)
                }
                counters.encodes.add(1, ordering: .relaxed)
                counters.frameBuilds.add(1, ordering: .relaxed)
                state.plainFrames[entry.encoderIndex] = plain
            }
            var frame = plain
            if let compressor = entry.compressor, let payload = ServerFrame.payload(of: plain), payload.readableBytes >= entry.minSize {
                var compressed = ByteBuffer()
                compressed.reserveCapacity(payload.readableBytes / 2 + 64)
                if compressor.compress(payload, into: &compressed) {
                    frame = ServerFrame.make(opcode: entry.encoder.frameKind == .text ? .text : .binary, payload: compressed, rsv1: true)
                    counters.compressions.add(1, ordering: .relaxed)
                    counters.frameBuilds.add(1, ordering: .relaxed)
                    let (input, output) = (payload.readableBytes, compressed.readableBytes)
                    counters.compressionBytes.withLockedValue { totals in
                        let current = totals[variant.index] ?? (0, 0)
                        totals[variant.index] = (current.input + input, current.output + output)
                    }
                }
            }
            state.frames[variant.index] = frame
            return frame
        }
    }
}
