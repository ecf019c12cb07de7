import Foundation
import SwitchboardCore
import SwitchboardServer
import SwitchboardTesting
import Testing

/// `/stats` and `/metrics` come from one list of samples: every number of one is in the
/// other, and `/metrics` is valid Prometheus text.
@Suite struct MetricsTests {
    static let config = """
        sources:
          - name: publish
            plugin: webhook
            keys: ["${SWITCHBOARD_PUBLISH_KEY}"]
        endpoints:
          - path: /ws
            encoders: [json]
            compression: {mode: shared, min_size: 0}
            stats_path: /ws/stats
            filters:
              - plugin: rate_limit
                connect_rate: 100
          - path: /dedicated
            encoders: [json]
            compression: {mode: dedicated, min_size: 0}
        """

    /// The value of the series `name` whose labels include `labels` (in any order).
    static func value(_ series: [String: Double], _ name: String, _ labels: [String: String]) -> Double? {
        series.first { key, _ in
            key.hasPrefix(name + "{") && labels.allSatisfy { key.contains("\($0.key)=\"\($0.value)\"") }
        }?.value
    }

    /// Every numeric leaf of a JSON value outside arrays, by path.
    static func numericLeaves(_ value: JSONValue, path: [String] = []) -> [[String]] {
        switch value {
        case .int, .double: return [path]
        case .object(let object): return object.entries.flatMap { numericLeaves($0.value, path: path + [$0.key]) }
        default: return []
        }
    }

    @Test func everyStatsNumberHasItsMetricAndTheTextParses() async throws {
        let gateway = try await TestGateway.start(Self.config)
        // Offers permessage-deflate, so the shared compressed variant is built.
        let client = try await TestWebSocketClient.connect(
            port: gateway.port, path: "/ws", headers: [("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")]
        )
        try await client.sendText(#"{"type":"subscribe","data":"news"}"#)
        _ = try await client.receiveFrame()  // `subscribed` (compressed)
        let dedicated = try await TestWebSocketClient.connect(
            port: gateway.port, path: "/dedicated", headers: [("Sec-WebSocket-Extensions", "permessage-deflate")]
        )
        try await dedicated.sendText(#"{"type":"subscribe","data":"news"}"#)
        _ = try await dedicated.receiveFrame()
        let published = try await gateway.post("/api/publish", body: #"{"topic":"news","type":"note","data":{"text":"hello hello hello hello"}}"#)
        #expect(published.status == 202)
        #expect(try await client.receiveFrame(timeout: .seconds(5)).rsv1)
        #expect(try await dedicated.receiveFrame(timeout: .seconds(5)).rsv1)

        let stats = try await gateway.get("/stats").body
        let catalogue = await gateway.gateway.statCatalogue()
        let cataloguedPaths = Set(catalogue.map { $0.path.joined(separator: ".") })
        // `subscribers` lists topic names (admin only): counts per name, not series.
        let leaves = Self.numericLeaves(stats).filter { $0.first != "subscribers" }.map { $0.joined(separator: ".") }
        #expect(leaves.count > 40)
        for leaf in leaves {
            #expect(cataloguedPaths.contains(leaf), "/stats \(leaf) has no metric")
        }

        let text = try await gateway.text("/metrics")
        var series: [String: Double] = [:]
        var typed: Set<String> = []
        for line in text.split(separator: "\n") {
            if line.hasPrefix("# TYPE ") {
                typed.insert(String(line.split(separator: " ")[2]))
                continue
            }
            if line.hasPrefix("#") { continue }
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else {
                Issue.record("not a Prometheus sample line: \(line)")
                continue
            }
            series[String(line[..<space])] = value
        }
        for entry in catalogue where !entry.alias {
            #expect(series[entry.series] != nil, "\(entry.series) (/stats \(entry.path.joined(separator: "."))) is not in /metrics")
            let name = String(entry.series.prefix { $0 != "{" })
            #expect(typed.contains(name), "\(name) has no # TYPE line")
        }
        #expect(series["switchboard_deliveries_total"] == 2)
        #expect(series["switchboard_connections{endpoint=\"/ws\"}"] == 1)
        // Bytes before and after compression per endpoint, encoder and mode.
        for (endpoint, mode) in [("/ws", "shared"), ("/dedicated", "dedicated")] {
            let labels = ["endpoint": endpoint, "encoder": "json", "mode": mode]
            let input = Self.value(series, "switchboard_compression_input_bytes_total", labels) ?? 0
            let output = Self.value(series, "switchboard_compression_output_bytes_total", labels) ?? .infinity
            #expect(input > output && output > 0, "\(endpoint) \(mode): \(input) → \(output)\n\(text)")
        }
        #expect((series["switchboard_publish_to_write_seconds_count"] ?? 0) >= 1)
        #expect(series["switchboard_reloads_total{result=\"applied\"}"] == 0)

        let endpoint = try await gateway.get("/ws/stats").body
        #expect(endpoint["connections"] == 1)
        #expect(endpoint["connected_clients"] == 1)
        try await client.sendClose(code: 1000)
        try await dedicated.sendClose(code: 1000)
        await gateway.stop()
    }
}
