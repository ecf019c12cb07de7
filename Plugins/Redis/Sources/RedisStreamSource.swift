import Foundation
import Logging
import NIOCore
import SwitchboardCore
import SwitchboardRedis

/// The `redis_stream` source (formerly `redis-stream`): loss-free delivery from Redis Streams through a consumer
/// group. Redis itself keeps the group's last delivered id and each consumer's pending
/// entries, so entries added while the gateway was stopped or disconnected arrive when it
/// comes back, in order; an entry is acknowledged (XACK) right after it was handed to
/// the kernel, and entries already handed over in this process are never handed over again.
public struct RedisStreamSource: SourcePlugin {
    public static let typeName = "redis_stream"
    public static let spec = PluginSpec(
        summary: "Read Redis Streams through a consumer group: entries written while the gateway was down are delivered after it returns, in order, once",
        examples: ["sources:\n  - name: job-log\n    plugin: redis_stream\n    streams: [\"botrix:jobs:log\"]\n    field: payload\n    topic: jobs\n    type: job_update"]
    )

    public enum Start: String, Sendable, ConfigEnum {
        case new, all
        public static var configPlaceholder: Start { .new }
    }

    public struct Config: PluginConfig {
        var common: RedisCommonConfig
        var streams: [String]
        var group: String
        var consumer: String
        var start: Start
        var field: String?
        var batch: Int
        var block: ConfigDuration

        static let common = RedisCommonConfig.Keys(url: "As for `redis`.", channel: "the stream key", protocolSummary: "RESP version.")
        static let streams = RequiredKey<[String]>("streams", "list", "Stream keys to read.")
        static let group = DefaultedKey("group", "string", default: "switchboard", "Consumer group (created with MKSTREAM when missing).")
        static let consumer = OptionalKey<String>(
            "consumer", "string", whenAbsent: "the host name",
            "Consumer name; keep it stable across restarts so pending entries are re-read."
        )
        static let start = DefaultedKey(
            "start", "new | all", default: Start.new,
            "Where a newly created group starts: entries added from now on, or the whole stream."
        )
        static let field = OptionalKey<String>(
            "field", "string", whenAbsent: "none",
            "Entry field holding the payload (parsed as JSON when it is JSON); without it the event data is an object of all fields."
        )
        static let batch = DefaultedKey("batch", "int", default: 100, "Entries per read.")
        static let block = DefaultedKey("block", "duration", default: ConfigDuration.seconds(2), "How long one read waits for new entries.")
        public static let keys: [any PluginKey] =
            [common.url, streams, group, consumer, start, field] + common.mapping.all
            + [batch, block, common.protocolVersion, common.connectTimeout]

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: PluginCodingKey.self)
            let common = Result { try RedisCommonConfig(from: container, keys: Self.common) }
            streams = try container.read(Self.streams)
            group = try container.read(Self.group)
            consumer = try container.read(Self.consumer) ?? ProcessInfo.processInfo.hostName
            start = try container.read(Self.start)
            field = try container.read(Self.field)
            batch = try container.read(Self.batch)
            block = try container.read(Self.block)
            self.common = try common.get()
            if streams.isEmpty { throw ConfigValidationError("'streams' is empty") }
            if !(1...10_000).contains(batch) { throw ConfigValidationError("'batch' must be between 1 and 10000") }
            if block.nanoseconds < 10_000_000 || block.nanoseconds > 60_000_000_000 {
                throw ConfigValidationError("'block' must be between 10ms and 60s")
            }
        }
    }

    public static func build(config: Config, context: any SourceContext) async throws -> any EventSource {
        RedisStreamRunner(config: config, context: context, delivered: DeliveredIDs())
    }
}

/// A stream entry id (`<ms>-<seq>`), ordered.
struct StreamID: Comparable, Sendable {
    let milliseconds: UInt64
    let sequence: UInt64

    init?(_ text: String) {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 2, let ms = UInt64(parts[0]), let seq = UInt64(parts[1]) else { return nil }
        milliseconds = ms
        sequence = seq
    }

    static func < (a: StreamID, b: StreamID) -> Bool {
        (a.milliseconds, a.sequence) < (b.milliseconds, b.sequence)
    }
}

/// The last id handed to the kernel per stream, kept across reconnects of this process.
final class DeliveredIDs: @unchecked Sendable {
    private var last: [String: StreamID] = [:]
    private let lock = NSLock()

    /// Records `id` for `stream`; `false` if it was handed over already.
    func claim(_ stream: String, _ id: StreamID) -> Bool {
        lock.withLock {
            if let previous = last[stream], id <= previous { return false }
            last[stream] = id
            return true
        }
    }
}

struct RedisStreamRunner: EventSource {
    let config: RedisStreamSource.Config
    let context: any SourceContext
    let delivered: DeliveredIDs
    var reportsOwnHealth: Bool { true }

    func run() async throws {
        let connection = try await RedisConnection.connect(
            to: config.common.url,
            protocolVersion: config.common.protocolVersion,
            connectTimeout: .nanoseconds(config.common.connectTimeout.nanoseconds)
        )
        try await withTaskCancellationHandler {
            let timeout = TimeAmount.nanoseconds(config.common.connectTimeout.nanoseconds)
            for stream in config.streams {
                do {
                    try await connection.send(
                        ["XGROUP", "CREATE", .string(stream), .string(config.group), config.start == .new ? "$" : "0", "MKSTREAM"],
                        timeout: timeout
                    )
                } catch RedisError.server(let message) where message.hasPrefix("BUSYGROUP") {
                    // The group exists: Redis remembers where it is.
                }
            }
            context.reportHealth(.connected)
            // First what this consumer was given but never acknowledged, then new entries.
            while try await readOnce(connection, pending: true) > 0 {}
            while !Task.isCancelled {
                _ = try await readOnce(connection, pending: false)
            }
        } onCancel: {
            connection.close()
        }
    }

    /// One XREADGROUP; hands the entries to the kernel in order, then acknowledges them.
    /// Returns how many entries the reply held.
    private func readOnce(_ connection: RedisConnection, pending: Bool) async throws -> Int {
        var command: [RESPArgument] = ["XREADGROUP", "GROUP", .string(config.group), .string(config.consumer), "COUNT", .string(String(config.batch))]
        let blockMilliseconds = config.block.nanoseconds / 1_000_000
        if !pending { command += ["BLOCK", .string(String(blockMilliseconds))] }
        command.append("STREAMS")
        command += config.streams.map { .string($0) }
        command += config.streams.map { _ in .string(pending ? "0" : ">") }
        let reply = try await connection.send(
            command,
            timeout: .nanoseconds(config.block.nanoseconds + config.common.connectTimeout.nanoseconds)
        )
        var count = 0
        for (stream, entries) in Self.streams(in: reply) {
            var acknowledged: [RESPArgument] = []
            for entry in entries {
                guard let parts = entry.elements, parts.count == 2, let idText = parts[0].string else { continue }
                count += 1
                acknowledged.append(.string(idText))
                // Pending entries already deleted from the stream come back without fields.
                guard let fields = parts[1].elements, let id = StreamID(idText), delivered.claim(stream, id) else { continue }
                context.emit(event(stream: stream, id: idText, fields: fields))
            }
            if !acknowledged.isEmpty {
                try await connection.send(["XACK", .string(stream), .string(config.group)] + acknowledged)
            }
        }
        return count
    }

    /// `[[stream, [entry…]]…]` (RESP2) or `{stream: [entry…]}` (RESP3); null when nothing came.
    static func streams(in reply: RESPValue) -> [(String, [RESPValue])] {
        var result: [(String, [RESPValue])] = []
        switch reply {
        case .array(let items):
            for item in items {
                guard let pair = item.elements, pair.count == 2, let name = pair[0].string, let entries = pair[1].elements else { continue }
                result.append((name, entries))
            }
        case .map(let items):
            var index = 0
            while index + 1 < items.count {
                if let name = items[index].string, let entries = items[index + 1].elements { result.append((name, entries)) }
                index += 2
            }
        default:
            break
        }
        return result
    }

    private func event(stream: String, id: String, fields: [RESPValue]) -> Event {
        if let field = config.field {
            var index = 0
            while index + 1 < fields.count {
                if fields[index].string == field, let payload = fields[index + 1].bytes {
                    return config.common.event(channel: stream, payload: payload, id: id)
                }
                index += 2
            }
        }
        var object = JSONObject()
        var index = 0
        while index + 1 < fields.count {
            if let name = fields[index].string, let value = fields[index + 1].bytes {
                object.entries.append((name, .string(String(decoding: value, as: UTF8.self))))
            }
            index += 2
        }
        return config.common.event(channel: stream, data: .object(object), id: id)
    }
}
