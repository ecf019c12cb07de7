import NIOCore
import Synchronization
import SwitchboardCore

/// Identifies one wire form of an event: which encoder (and, later, which compression
/// parameters). Variants are numbered densely by the kernel's ``VariantTable``.
public struct VariantID: Hashable, Sendable {
    public let index: Int
    public init(index: Int) { self.index = index }
}

/// The wire forms the kernel can build, fixed at start-up.
public struct VariantTable: Sendable {
    /// One entry per variant.
    public struct Entry: Sendable {
        public let encoder: any EventEncoder
    }

    public let entries: [Entry]

    /// One variant per encoder.
    public init(encoders: [any EventEncoder]) {
        self.entries = encoders.map { Entry(encoder: $0) }
    }

    /// The variant for the encoder named `name`.
    public func variant(forEncoder name: String) -> VariantID? {
        entries.firstIndex { $0.encoder.name == name }.map(VariantID.init(index:))
    }

    public var count: Int { entries.count }
}

/// One published event plus its frames, built lazily at most once per variant and shared
/// by every recipient on that variant, on every event loop.
public final class PreparedEvent: Sendable {
    public let event: Event
    private let table: VariantTable
    private let frames: Mutex<[ByteBuffer?]>
    private let counters: KernelCounters

    init(event: Event, table: VariantTable, counters: KernelCounters) {
        self.event = event
        self.table = table
        self.counters = counters
        self.frames = Mutex(Array(repeating: nil, count: table.count))
    }

    /// The complete WebSocket frame for `variant`, encoding it on first use.
    public func frame(for variant: VariantID) -> ByteBuffer {
        frames.withLock { frames in
            guard variant.index >= 0 && variant.index < frames.count else { return ByteBuffer() }
            if let frame = frames[variant.index] { return frame }
            let encoder = table.entries[variant.index].encoder
            let frame = ServerFrame.make(opcode: encoder.frameKind == .text ? .text : .binary) { buffer in
                encoder.encode(event, into: &buffer)
            }
            counters.encodes.add(1, ordering: .relaxed)
            frames[variant.index] = frame
            return frame
        }
    }
}
