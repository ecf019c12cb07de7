import AsyncHTTPClient
import Logging
import NIOCore
import NIOHTTP1
import SwitchboardCore

/// The `timer` source: every interval, emit the gateway's own stats, a static payload, or
/// the JSON body of an HTTP GET (optionally only when it changed).
///
/// ```yaml
/// - plugin: timer
///   every: 2s
///   topic: metrics
///   emit: stats
/// ```
public struct TimerSource: SourcePlugin {
    public static let typeName = "timer"

    public static let spec = PluginSpec(
        summary: "Emit an event on a fixed interval: gateway stats, a static payload, or a polled HTTP JSON body",
        examples: [
            "- plugin: timer\n  every: 2s\n  topic: metrics\n  emit: stats",
            "- plugin: timer\n  every: 5s\n  topic: cluster:status\n  type: status\n  emit: http\n  url: http://127.0.0.1:9000/status\n  only_changed: true",
        ]
    )

    /// What a tick publishes.
    public enum Emit: String, Sendable, ConfigEnum {
        case stats
        case `static`
        case http

        public static var configPlaceholder: Emit { .static }
    }

    public struct Config: PluginConfig {
        /// Interval between events.
        public var every: ConfigDuration
        /// Topic the events are published on.
        public var topic: String
        /// Event type; defaults to the topic.
        public var type: String
        /// What each tick publishes.
        public var emit: Emit
        /// Static payload (`emit: static`).
        public var data: JSONValue
        /// URL polled with GET (`emit: http`).
        public var url: String?
        /// Publish only when the polled body changed.
        public var onlyChanged: Bool
        /// HTTP request timeout.
        public var timeout: ConfigDuration
        /// Largest accepted response body.
        public var maxBody: ConfigByteSize

        static let every = RequiredKey<ConfigDuration>("every", "duration", "Interval between events (e.g. 2s, 500ms).")
        static let topic = RequiredKey<String>("topic", "string", "Topic the events are published on.")
        static let type = OptionalKey<String>("type", "string", whenAbsent: "the topic", "Event type shown to clients.")
        static let emit = DefaultedKey("emit", "stats | static | http", default: Emit.static, "What each tick publishes.")
        static let data = DefaultedKey("data", "any YAML, for emit: static", default: JSONValue.null, shown: "null", "The payload.")
        static let url = OptionalKey<String>("url", "http(s) URL, for emit: http", "Polled with GET; the body must be JSON.")
        static let onlyChanged = DefaultedKey(
            "only_changed", "bool", default: false,
            "For emit: http, publish only when the body differs from the last one."
        )
        static let timeout = DefaultedKey("timeout", "duration", default: ConfigDuration.seconds(5), "For emit: http, request timeout.")
        static let maxBody = DefaultedKey(
            "max_body", "size", default: ConfigByteSize(bytes: 4 * 1024 * 1024),
            "For emit: http, largest accepted response body."
        )
        public static let keys: [any PluginKey] = [every, topic, type, emit, data, url, onlyChanged, timeout, maxBody]

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: PluginCodingKey.self)
            every = try container.read(Self.every)
            topic = try container.read(Self.topic)
            type = try container.read(Self.type) ?? topic
            emit = try container.read(Self.emit)
            data = try container.read(Self.data)
            url = try container.read(Self.url)
            onlyChanged = try container.read(Self.onlyChanged)
            timeout = try container.read(Self.timeout)
            maxBody = try container.read(Self.maxBody)
            if every.nanoseconds < 1_000_000 {
                throw ConfigValidationError("'every' must be at least 1ms, got \(every)")
            }
            if TopicPattern(topic) == nil || topic.contains("*") {
                throw ConfigValidationError("invalid topic '\(topic)'", hint: "a topic is 1–256 visible characters without '*'")
            }
            switch emit {
            case .http:
                guard let url else { throw ConfigValidationError("emit: http needs a 'url'") }
                guard url.hasPrefix("http://") || url.hasPrefix("https://") else {
                    throw ConfigValidationError("'url' must start with http:// or https://, got '\(url)'")
                }
            case .static, .stats:
                if url != nil { throw ConfigValidationError("'url' is only used with emit: http", hint: "add emit: http") }
            }
        }
    }

    public static func build(config: Config, context: any SourceContext) async throws -> any EventSource {
        TimerRunner(config: config, context: context)
    }
}

/// The running timer.
struct TimerRunner: EventSource {
    let config: TimerSource.Config
    let context: any SourceContext

    func run() async throws {
        let client: HTTPClient? = config.emit == .http ? HTTPClient(eventLoopGroupProvider: .singleton) : nil
        defer {
            if let client { Task { try? await client.shutdown() } }
        }
        let clock = ContinuousClock()
        var next = clock.now
        var last: JSONValue?
        while !Task.isCancelled {
            switch config.emit {
            case .stats:
                publish(await context.statsSnapshot())
            case .static:
                publish(config.data)
            case .http:
                if let client {
                    do {
                        let body = try await poll(client)
                        context.reportHealth(.connected)
                        if !config.onlyChanged || body != last {
                            last = body
                            publish(body)
                        }
                    } catch {
                        context.reportHealth(.retrying(lastError: "\(error)"))
                    }
                }
            }
            next = next.advanced(by: config.every.duration)
            let now = clock.now
            if next < now { next = now }  // a slow tick does not cause a burst afterwards
            try await clock.sleep(until: next)
        }
    }

    private func publish(_ data: JSONValue) {
        context.emit(Event(topic: config.topic, type: config.type, data: data))
    }

    private func poll(_ client: HTTPClient) async throws -> JSONValue {
        guard let url = config.url else { return .null }
        var request = HTTPClientRequest(url: url)
        request.headers.add(name: "Accept", value: "application/json")
        let response = try await client.execute(request, timeout: .nanoseconds(config.timeout.nanoseconds))
        guard (200..<300).contains(response.status.code) else {
            throw TimerPollError("GET \(url) answered \(response.status.code)")
        }
        let body = try await response.body.collect(upTo: config.maxBody.bytes)
        do {
            return try JSONParser.parse(body.readableBytesView)
        } catch {
            throw TimerPollError("GET \(url): body is not JSON: \(error.description)")
        }
    }
}

struct TimerPollError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
