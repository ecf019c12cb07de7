import Foundation
import NIOConcurrencyHelpers
import Prometheus
import Synchronization
import SwitchboardCluster
import SwitchboardConfig
import SwitchboardCore
import SwitchboardKernel

/// One number the gateway reports: where it goes in `/stats` and which Prometheus series
/// it is in `/metrics`. Both outputs are built from the same list of samples
/// (``Gateway/statSamples()``), so no counter can exist in one and not the other.
struct StatSample {
    /// The family's name without the `switchboard_` prefix (a key of ``StatFamily/all``).
    var metric: String
    var labels: [(String, String)] = []
    var value: Int64
    /// Where it sits in the `/stats` JSON.
    var path: [String]
}

/// A metric family: its Prometheus type and help text.
struct StatFamily {
    enum Kind { case counter, gauge }
    let kind: Kind
    let help: String

    /// Every family, by name. A sample naming a family missing here is a programming error
    /// caught by a test (``Gateway/statSamples()`` against this table).
    static let all: [String: StatFamily] = [
        "uptime_seconds": .init(kind: .gauge, help: "Seconds since the gateway started."),
        "connections": .init(kind: .gauge, help: "Open WebSocket connections and SSE streams."),
        "connections_accepted_total": .init(kind: .counter, help: "WebSocket upgrades accepted."),
        "connections_rejected_total": .init(kind: .counter, help: "WebSocket upgrades refused (format, filters)."),
        "connections_closed_for_cause_total": .init(kind: .counter, help: "Connections closed for protocol violations, limits, dead peers or overflow."),
        "forbidden_subscriptions_total": .init(kind: .counter, help: "Subscriptions refused by topic permissions."),
        "dropped_by_policy_total": .init(kind: .counter, help: "Event frames dropped by an endpoint's slow-consumer policy."),
        "filter_denials_total": .init(kind: .counter, help: "Upgrades and messages refused by filters, per reason."),
        "filter_observed_total": .init(kind: .counter, help: "What filters in observe mode would have refused, per reason."),
        "refusals_total": .init(kind: .counter, help: "Connections, requests and messages refused by a limit or for a protocol violation, per reason."),
        "open_sockets": .init(kind: .gauge, help: "Open client sockets (HTTP and WebSocket) against listener.max_connections."),
        "max_connections": .init(kind: .gauge, help: "listener.max_connections in force."),
        "subscriptions": .init(kind: .gauge, help: "Subscriptions held by connections."),
        "subscription_patterns": .init(kind: .gauge, help: "Distinct topics and patterns subscribed to."),
        "events_in_total": .init(kind: .counter, help: "Events published into the kernel."),
        "deliveries_total": .init(kind: .counter, help: "Event frames queued to connections."),
        "dropped_total": .init(kind: .counter, help: "Frames dropped by slow-consumer policies, all endpoints."),
        "queued_frames": .init(kind: .gauge, help: "Frames waiting in send queues behind full sockets (slow readers), all connections."),
        "encodes_total": .init(kind: .counter, help: "Encoder calls on the broadcast path."),
        "compressions_total": .init(kind: .counter, help: "Shared permessage-deflate compressions."),
        "compression_input_bytes_total": .init(kind: .counter, help: "Payload bytes before shared compression, per encoder."),
        "compression_output_bytes_total": .init(kind: .counter, help: "Payload bytes after shared compression, per encoder."),
        "frame_builds_total": .init(kind: .counter, help: "Frames built on the broadcast path (at most one per event and variant)."),
        "dedicated_compression_memory_bytes": .init(kind: .gauge, help: "zlib memory reserved by dedicated-mode connections."),
        "history_replayed_total": .init(kind: .counter, help: "Events replayed from history (since, last, retained)."),
        "history_topics_refused_total": .init(kind: .counter, help: "Events of new topics not kept because the history table was full."),
        "flush_rounds_total": .init(kind: .counter, help: "Flush rounds run by the event loops."),
        "connection_writes_total": .init(kind: .counter, help: "Socket writes of gathered frames (deliveries / writes = frames per write)."),
        "socket_writes_total": .init(kind: .counter, help: "Writes to client WebSocket sockets by path: direct (to the kernel, below NIO's pipeline) or pipeline (through NIO)."),
        "source_up": .init(kind: .gauge, help: "1 when the source is connected."),
        "source_restarts_total": .init(kind: .counter, help: "Times a source was restarted after failing."),
        "ready": .init(kind: .gauge, help: "1 when every source is connected and the gateway is not draining."),
        "cluster_sent_total": .init(kind: .counter, help: "Events this instance published on the cluster bus."),
        "cluster_unsent_total": .init(kind: .counter, help: "Events that could not be published on the cluster bus."),
        "cluster_received_total": .init(kind: .counter, help: "Events received from the cluster bus."),
        "cluster_history_failures_total": .init(kind: .counter, help: "History reads or writes in Redis that failed."),
        "reloads_total": .init(kind: .counter, help: "Configuration reloads, per result."),
        "last_reload_timestamp_seconds": .init(kind: .gauge, help: "When the last reload that applied ran (0: none)."),
        "resident_memory_bytes": .init(kind: .gauge, help: "Resident set size of the process (/proc/self/statm)."),
        "resident_memory_at_start_bytes": .init(kind: .gauge, help: "Resident set size once listening, before any client."),
        "resident_memory_per_connection_bytes": .init(kind: .gauge, help: "Estimate: growth of the resident set since start divided by open WebSocket connections (0 without any). Includes caches and allocator slack; meaningful with many connections."),
    ]
}

/// The metrics that are observed rather than counted: kept in a swift-prometheus registry
/// for the gateway's lifetime.
final class ObservedMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    /// From an event's publication to the write of the flush round that carried it to its
    /// subscribers (the oldest event of each round, per event loop).
    let publishToWrite: DurationHistogram

    static let buckets: [Duration] = [
        .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10),
        .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(5),
    ]

    init() {
        publishToWrite = registry.makeDurationHistogram(
            name: "switchboard_publish_to_write_seconds",
            buckets: Self.buckets,
            help: "Time from an event's publication to the socket writes of the flush round that carried it (oldest event per round and loop)."
        )
    }
}

extension Gateway {
    /// Every number of `/stats` and `/metrics`, read now.
    func statSamples() async -> [StatSample] {
        var samples: [StatSample] = []
        func add(_ metric: String, _ value: Int, _ path: [String], labels: [(String, String)] = []) {
            samples.append(StatSample(metric: metric, labels: labels, value: Int64(value), path: path))
        }
        let counters = assembly.kernel.counters
        add("uptime_seconds", Int((UnixTime.nowMilliseconds() - started) / 1000), ["uptime_seconds"])
        let table = endpoints.all
        var total = 0
        for path in table.keys.sorted() {
            guard let runtime = table[path] else { continue }
            let endpoint = [("endpoint", path)]
            let base = ["connections", "per_endpoint", path]
            let open = runtime.connections.load(ordering: .relaxed)
            total += open
            add("connections", open, base + ["connections"], labels: endpoint)
            // The older name of the same number (`stats_path` answers carried it first).
            add("connections", open, base + ["connected_clients"], labels: endpoint + [("alias", "connected_clients")])
            add("connections_accepted_total", runtime.accepted.load(ordering: .relaxed), base + ["accepted"], labels: endpoint)
            add("connections_rejected_total", runtime.rejected.load(ordering: .relaxed), base + ["rejected"], labels: endpoint)
            add("connections_closed_for_cause_total", runtime.closedForCause.load(ordering: .relaxed), base + ["closed_for_cause"], labels: endpoint)
            add("forbidden_subscriptions_total", runtime.forbiddenSubscriptions.load(ordering: .relaxed), base + ["forbidden_subscriptions"], labels: endpoint)
            let policy = runtime.pipeline.sendQueue.policy.rawValue
            add("dropped_by_policy_total", runtime.dropped.load(ordering: .relaxed), base + ["dropped"], labels: endpoint + [("policy", policy)])
            for entry in runtime.refusals.snapshot {
                add("refusals_total", entry.count, base + ["refusals", entry.name], labels: [("scope", path), ("reason", entry.name)])
            }
            for record in runtime.pipeline.filterDenials {
                for entry in record.counts {
                    let labels = endpoint + [("filter", record.filter), ("reason", entry.reason)]
                    if entry.denied > 0 {
                        add("filter_denials_total", entry.denied, base + ["filter_denials", record.filter, entry.reason], labels: labels)
                    }
                    if entry.observed > 0 {
                        add("filter_observed_total", entry.observed, base + ["filter_observed", record.filter, entry.reason], labels: labels)
                    }
                }
            }
        }
        add("connections", total, ["connections", "total"], labels: [("endpoint", "*")])
        let counts = await assembly.kernel.subscriberCounts()
        add("subscriptions", counts.values.reduce(0, +), ["subscriptions", "total"])
        add("subscription_patterns", counts.count, ["subscriptions", "patterns"])
        for entry in listenerRefusals.snapshot {
            add("refusals_total", entry.count, ["refusals", "listener", entry.name], labels: [("scope", "listener"), ("reason", entry.name)])
        }
        add("open_sockets", connectionLimiter.openConnections, ["refusals", "open_sockets"])
        add("max_connections", connectionLimiter.maxConnections, ["refusals", "max_connections"])
        add("events_in_total", counters.eventsIn.load(ordering: .relaxed), ["events_in"])
        add("deliveries_total", counters.deliveries.load(ordering: .relaxed), ["deliveries_out"])
        add("encodes_total", counters.encodes.load(ordering: .relaxed), ["encodes"])
        add("compressions_total", counters.compressions.load(ordering: .relaxed), ["compressions"])
        for (key, bytes) in compressionTotals() {
            let labels = [("endpoint", key.endpoint), ("encoder", key.encoder), ("mode", key.mode)]
            add("compression_input_bytes_total", bytes.input, ["compression_bytes", key.endpoint, key.encoder, key.mode, "input"], labels: labels)
            add("compression_output_bytes_total", bytes.output, ["compression_bytes", key.endpoint, key.encoder, key.mode, "output"], labels: labels)
        }
        add("frame_builds_total", counters.frameBuilds.load(ordering: .relaxed), ["frame_builds"])
        add("dedicated_compression_memory_bytes", counters.dedicatedCompressionMemory.load(ordering: .relaxed), ["dedicated_compression_memory_bytes"])
        add("dropped_total", counters.dropped.load(ordering: .relaxed), ["dropped"])
        var queued = 0
        for shard in assembly.kernel.shards { queued += await shard.queuedFramesOnLoop() }
        add("queued_frames", queued, ["queued_frames"])
        add("history_replayed_total", counters.replayed.load(ordering: .relaxed), ["history_replayed"])
        add("history_topics_refused_total", counters.historyTopicsRefused.load(ordering: .relaxed), ["history_topics_refused"])
        add("flush_rounds_total", counters.flushRounds.load(ordering: .relaxed), ["flush_rounds"])
        add("connection_writes_total", counters.connectionWrites.load(ordering: .relaxed), ["connection_writes"])
        var socketWrites = (direct: 0, pipeline: 0)
        for shard in assembly.kernel.shards {
            let counts = await shard.socketWritesOnLoop()
            socketWrites.direct += counts.direct
            socketWrites.pipeline += counts.pipeline
        }
        add("socket_writes_total", socketWrites.direct, ["socket_writes", "direct"], labels: [("path", "direct")])
        add("socket_writes_total", socketWrites.pipeline, ["socket_writes", "pipeline"], labels: [("path", "pipeline")])
        for status in assembly.supervisor.statuses() {
            let labels = [("source", status.name), ("plugin", status.plugin)]
            add("source_up", status.health == .connected ? 1 : 0, ["source_health", status.name, "up"], labels: labels + [("state", status.health.label)])
            add("source_restarts_total", status.restarts, ["source_health", status.name, "restarts"], labels: labels)
        }
        add("ready", assembly.supervisor.isReady && !drain.hasStarted ? 1 : 0, ["ready"])
        if let bus {
            let counts = bus.counts
            add("cluster_sent_total", counts.sent, ["cluster", "sent"])
            add("cluster_unsent_total", counts.unsent, ["cluster", "unsent"])
            add("cluster_received_total", counts.received, ["cluster", "received"])
            add("cluster_history_failures_total", counts.historyFailures, ["cluster", "history_failures"])
        }
        add("reloads_total", reloads.applied.load(ordering: .relaxed), ["reloads", "applied"], labels: [("result", "applied")])
        add("reloads_total", reloads.rejected.load(ordering: .relaxed), ["reloads", "rejected"], labels: [("result", "rejected")])
        add("last_reload_timestamp_seconds", Int(reloads.lastAppliedAt.load(ordering: .relaxed) / 1000), ["reloads", "last_applied_seconds"])
        if let resident = Self.residentMemoryBytes() {
            add("resident_memory_bytes", resident, ["memory", "resident_bytes"])
            let baseline = residentAtStart.load(ordering: .relaxed)
            add("resident_memory_at_start_bytes", baseline, ["memory", "resident_bytes_at_start"])
            let open = endpoints.all.values.reduce(0) { $0 + $1.connections.load(ordering: .relaxed) }
            let perConnection = baseline > 0 && open > 0 ? max(0, resident - baseline) / open : 0
            add("resident_memory_per_connection_bytes", perConnection, ["memory", "per_connection_bytes"])
        }
        return samples
    }

    /// `/metrics`: the samples through a swift-prometheus registry, then the observed
    /// histograms, in the Prometheus text format.
    func metricsText() async -> String {
        let registry = PrometheusCollectorRegistry()
        for sample in await statSamples() {
            // An alias is the same number under an older /stats name, not another series.
            if sample.labels.contains(where: { $0.0 == "alias" }) { continue }
            guard let family = StatFamily.all[sample.metric] else { continue }
            let name = "switchboard_" + sample.metric
            switch family.kind {
            case .counter: registry.makeCounter(name: name, labels: sample.labels, help: family.help).increment(by: sample.value)
            case .gauge: registry.makeGauge(name: name, labels: sample.labels, help: family.help).set(Double(sample.value))
            }
        }
        var bytes: [UInt8] = []
        registry.emit(into: &bytes)
        observed.registry.emit(into: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    /// One endpoint's counters (at its `stats_path`): its part of `/stats`.
    func endpointStats(_ path: String) async -> JSONValue {
        var stats = Self.json(from: await statSamples().filter { $0.path.count > 3 && $0.path[2] == path }.map {
            StatSample(metric: $0.metric, labels: $0.labels, value: $0.value, path: Array($0.path.dropFirst(3)))
        })
        if let runtime = endpoints[path] { stats["filters"] = .array(runtime.pipeline.filterDenials.map { $0.snapshot() }) }
        return .object(stats)
    }

    /// What `/stats` returns (and what a `timer` with `emit: stats` publishes): the samples
    /// as nested JSON, plus the lists behind them (sources with their state, filters).
    /// Subscribed topic names belong to clients: only a `detailed` snapshot (admin key)
    /// lists them; everyone else sees counts.
    public func statsSnapshot(detailed: Bool = false) async -> JSONValue {
        var stats = Self.json(from: await statSamples())
        // The lists behind the numbers: each endpoint's filters with their reasons.
        if var connections = stats["connections"]?.objectValue, var perEndpoint = connections["per_endpoint"]?.objectValue {
            for (path, runtime) in endpoints.all {
                guard var endpoint = perEndpoint[path]?.objectValue else { continue }
                endpoint["filters"] = .array(runtime.pipeline.filterDenials.map { $0.snapshot() })
                perEndpoint[path] = .object(endpoint)
            }
            connections["per_endpoint"] = .object(perEndpoint)
            stats["connections"] = .object(connections)
        }
        stats["subscribers"] = .null
        if detailed {
            let counts = await assembly.kernel.subscriberCounts()
            stats["subscribers"] = .object(JSONObject(counts.sorted { $0.key < $1.key }.map { ($0.key, .int(Int64($0.value))) }))
        }
        stats["sources"] = .array(assembly.supervisor.statuses().map(Self.sourceJSON))
        if let bus {
            stats["cluster"] = .object(JSONObject((stats["cluster"]?.objectValue?.entries ?? []) + bus.identity))
        } else {
            stats["cluster"] = .null
        }
        return .object(stats)
    }

    /// Nested JSON from the samples' paths, in the order they come.
    static func json(from samples: [StatSample]) -> JSONObject {
        var root = JSONObject()
        for sample in samples { insert(.int(sample.value), at: sample.path[...], into: &root) }
        return root
    }

    private static func insert(_ value: JSONValue, at path: ArraySlice<String>, into object: inout JSONObject) {
        guard let key = path.first else { return }
        if path.count == 1 {
            object[key] = value
            return
        }
        var child = object[key]?.objectValue ?? JSONObject()
        insert(value, at: path.dropFirst(), into: &child)
        object[key] = .object(child)
    }

    /// Resident memory from `/proc/self/statm` (Linux); nil elsewhere.
    static func residentMemoryBytes() -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return nil }
        let fields = text.split(separator: " ")
        guard fields.count > 1, let pages = Int(fields[1]) else { return nil }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }
}

extension Gateway {
    /// Each number of `/stats` (its path) with the `/metrics` series that carries it: what
    /// tests check the two outputs against.
    public func statCatalogue() async -> [(path: [String], series: String, alias: Bool)] {
        await statSamples().map { sample in
            let labels = sample.labels.filter { $0.0 != "alias" }
            let rendered = labels.isEmpty ? "" : "{" + labels.map { "\($0.0)=\"\($0.1)\"" }.joined(separator: ",") + "}"
            return (sample.path, "switchboard_" + sample.metric + rendered, sample.labels.contains { $0.0 == "alias" })
        }
    }
}

extension Gateway {
    struct CompressionKey: Hashable, Comparable {
        let endpoint: String
        let encoder: String
        let mode: String

        static func < (a: Self, b: Self) -> Bool { (a.endpoint, a.encoder, a.mode) < (b.endpoint, b.encoder, b.mode) }
    }

    /// Payload bytes before and after permessage-deflate, per endpoint, encoder and mode.
    /// A shared-mode event frame is compressed once for every endpoint whose compression
    /// settings and encoder produce that variant: its bytes are counted once, under the
    /// comma-joined paths of those endpoints. What connections compress one by one
    /// (dedicated-mode deliveries, replies, echoes) is counted under their own endpoint.
    func compressionTotals() -> [(key: CompressionKey, value: (input: Int, output: Int))] {
        var totals: [CompressionKey: (input: Int, output: Int)] = [:]
        func add(_ key: CompressionKey, _ input: Int, _ output: Int) {
            let current = totals[key] ?? (0, 0)
            totals[key] = (current.input + input, current.output + output)
        }
        let runtimes = endpoints.all
        let entries = assembly.kernel.variants.entries
        for (index, bytes) in assembly.kernel.counters.compressionBytes.withLockedValue({ $0 }) where entries.indices.contains(index) {
            let entry = entries[index]
            let users = runtimes.filter { _, runtime in
                let pipeline = runtime.pipeline
                guard let profile = pipeline.compression?.profile, let deflate = entry.deflate else { return false }
                return profile == CompressionProfile(level: deflate.level, memLevel: deflate.memLevel, minSize: entry.minSize)
                    && pipeline.encoders.contains { $0.encoder.variantKey == entry.encoder.variantKey }
            }.keys.sorted()
            add(CompressionKey(endpoint: users.isEmpty ? "(none)" : users.joined(separator: ","), encoder: entry.encoder.name, mode: "shared"), bytes.input, bytes.output)
        }
        for (path, runtime) in runtimes {
            for (key, bytes) in runtime.compression.all {
                add(CompressionKey(endpoint: path, encoder: key.encoder, mode: key.mode.rawValue), bytes.input, bytes.output)
            }
        }
        return totals.sorted { $0.key < $1.key }.map { (key: $0.key, value: $0.value) }
    }
}
