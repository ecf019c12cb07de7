import NIOConcurrencyHelpers
import Logging
import NIOCore
import Synchronization

/// Why the gateway refused a client something: a request, a connection, a message.
public enum Refusal: Int, CaseIterable, Sendable {
    /// A message or frame over the endpoint's `max_message_size` (close 1009).
    case messageTooBig
    /// A protocol violation: bad frame, bad close, invalid UTF-8, bad deflate data (close 1002/1007).
    case protocolError
    /// Over the endpoint's `max_message_rate` (close 1008).
    case messageRate
    /// A connection whose send queue overflowed under `policy: disconnect` (close 1008).
    case slowConsumerDisconnect
    /// A connection whose send queue started dropping frames under `policy: drop_oldest`.
    case slowConsumerDrops
    /// A connection that did not answer a heartbeat ping.
    case deadPeer
    /// Over `limits.max_connections` (HTTP 503 / socket closed).
    case maxConnections
    /// Over `limits.max_connections_per_ip` (HTTP 503 / socket closed).
    case maxConnectionsPerIP
    /// No complete request (or upgrade) within `limits.handshake_timeout`.
    case handshakeTimeout
    /// An unparsable HTTP request or one with oversized headers (HTTP 400 / 431).
    case badRequest
    /// A webhook body over the source's `max_body` (HTTP 413).
    case bodyTooLarge
    /// A client message that could not be decoded: not JSON/MessagePack, too deep, no type.
    case badMessage
    /// A subscription to an invalid or too long topic (`bad_topic` reply).
    case badTopic
    /// A subscription past `max_subscriptions` (`too_many_subscriptions` reply).
    case tooManySubscriptions

    /// The name used in `/stats` and as the `reason` label in `/metrics`.
    public var name: String {
        switch self {
        case .messageTooBig: "message_too_big"
        case .protocolError: "protocol_error"
        case .messageRate: "message_rate"
        case .slowConsumerDisconnect: "slow_consumer_disconnect"
        case .slowConsumerDrops: "slow_consumer_drops"
        case .deadPeer: "dead_peer"
        case .maxConnections: "max_connections"
        case .maxConnectionsPerIP: "max_connections_per_ip"
        case .handshakeTimeout: "handshake_timeout"
        case .badRequest: "bad_request"
        case .bodyTooLarge: "body_too_large"
        case .badMessage: "bad_message"
        case .badTopic: "bad_topic"
        case .tooManySubscriptions: "too_many_subscriptions"
        }
    }

    /// The refusal an error reply stands for, if it is one of the counted kinds.
    init?(errorCode: String) {
        switch errorCode {
        case "bad_topic": self = .badTopic
        case "too_many_subscriptions": self = .tooManySubscriptions
        case "bad_message": self = .badMessage
        default: return nil
        }
    }
}

/// Counts refusals by kind and logs each kind at most once per ``logInterval``, with how
/// many happened since the last line, so a hostile client cannot flood the log.
public final class RefusalCounters: Sendable {
    /// The shortest time between two log lines of one kind.
    public static let logInterval: Int64 = 10_000_000_000

    private struct State {
        var counts = [Int](repeating: 0, count: Refusal.allCases.count)
        var lastLogged = [Int64](repeating: Int64.min / 2, count: Refusal.allCases.count)
        var loggedCount = [Int](repeating: 0, count: Refusal.allCases.count)
    }

    /// Refusals are rare next to deliveries; a lock per refusal costs nothing that matters.
    private let state = NIOLockedValueBox(State())
    private let logger: Logger
    private let scope: String

    /// `scope` names what the counters belong to in log lines (an endpoint path, `listener`).
    public init(scope: String, logger: Logger) {
        self.logger = logger
        self.scope = scope
    }

    /// Counts one refusal (and logs it, unless a line of its kind was logged recently).
    public func record(_ refusal: Refusal) {
        let now = Int64(NIODeadline.now().uptimeNanoseconds)
        let line = state.withLockedValue { state -> (total: Int, since: Int)? in
            let index = refusal.rawValue
            state.counts[index] += 1
            guard now - state.lastLogged[index] >= Self.logInterval else { return nil }
            state.lastLogged[index] = now
            let since = state.counts[index] - state.loggedCount[index]
            state.loggedCount[index] = state.counts[index]
            return (state.counts[index], since)
        }
        guard let line else { return }
        logger.notice(
            "refused: \(refusal.name)",
            metadata: ["scope": .string(scope), "since_last_line": "\(line.since)", "total": "\(line.total)"]
        )
    }

    /// How many refusals of this kind so far.
    public func count(_ refusal: Refusal) -> Int {
        state.withLockedValue { $0.counts[refusal.rawValue] }
    }

    /// Every kind with its count, for `/stats`.
    public var snapshot: [(name: String, count: Int)] {
        let counts = state.withLockedValue { $0.counts }
        return Refusal.allCases.map { ($0.name, counts[$0.rawValue]) }
    }
}
