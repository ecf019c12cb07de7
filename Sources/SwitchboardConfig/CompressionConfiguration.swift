import SwitchboardCore

/// permessage-deflate for one endpoint (`compression:`). Absent or `mode: off` = no compression.
///
/// ```yaml
/// compression:
///   mode: shared        # or dedicated, or off
///   min_size: 256
///   level: 6
/// ```
public struct CompressionConfiguration: Sendable, Decodable, Equatable {
    /// `off`, `shared` (compress each event once for everyone) or `dedicated` (per-connection context).
    public enum Mode: String, Sendable, ConfigEnum {
        case off, shared, dedicated
        public static var configPlaceholder: Mode { .off }
    }

    public var mode: Mode
    /// Messages smaller than this go uncompressed.
    public var minSize: ConfigByteSize
    /// zlib level 1–9.
    public var level: Int
    /// Largest server window (9–15); default 15 for shared, 10 for dedicated.
    public var windowBits: Int
    /// zlib memLevel 1–9; default 8 for shared, 4 for dedicated.
    public var memLevel: Int
    /// Largest window we ask clients to compress with, when they let us choose (9–15).
    public var clientWindowBits: Int
    /// Dedicated mode: node-wide memory for per-connection compressors; past it new
    /// connections fall back to shared.
    public var maxMemory: ConfigByteSize

    public static let off = CompressionConfiguration(
        mode: .off, minSize: ConfigByteSize(bytes: 256), level: 6, windowBits: 15, memLevel: 8,
        clientWindowBits: 15, maxMemory: ConfigByteSize(bytes: 64 * 1024 * 1024)
    )

    public init(mode: Mode, minSize: ConfigByteSize, level: Int, windowBits: Int, memLevel: Int, clientWindowBits: Int, maxMemory: ConfigByteSize) {
        self.mode = mode
        self.minSize = minSize
        self.level = level
        self.windowBits = windowBits
        self.memLevel = memLevel
        self.clientWindowBits = clientWindowBits
        self.maxMemory = maxMemory
    }

    enum CodingKeys: String, CodingKey {
        case mode, level
        case minSize = "min_size"
        case windowBits = "window_bits"
        case memLevel = "mem_level"
        case clientWindowBits = "client_window_bits"
        case maxMemory = "max_memory"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        mode = try container.value(.mode, default: .shared)
        minSize = try container.value(.minSize, default: ConfigByteSize(bytes: 256))
        level = try container.value(.level, default: 6)
        windowBits = try container.value(.windowBits, default: mode == .dedicated ? 10 : 15)
        memLevel = try container.value(.memLevel, default: mode == .dedicated ? 4 : 8)
        clientWindowBits = try container.value(.clientWindowBits, default: 15)
        maxMemory = try container.value(.maxMemory, default: ConfigByteSize(bytes: 64 * 1024 * 1024))
        let node = decoder as? NodeDecoder
        if !(1...9).contains(level) { node?.report("level must be 1–9, got \(level)", key: "level") }
        if !(9...15).contains(windowBits) {
            node?.report("window_bits must be 9–15, got \(windowBits)", hint: "zlib cannot produce raw deflate with an 8-bit window", key: "window_bits")
        }
        if !(9...15).contains(clientWindowBits) { node?.report("client_window_bits must be 9–15, got \(clientWindowBits)", key: "client_window_bits") }
        if !(1...9).contains(memLevel) { node?.report("mem_level must be 1–9, got \(memLevel)", key: "mem_level") }
    }
}
