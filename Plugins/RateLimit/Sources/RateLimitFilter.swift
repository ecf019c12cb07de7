import Logging
import NIOConcurrencyHelpers
import NIOCore
import SwitchboardCore

/// The `rate_limit` filter: connection attempts per second per client IP (token bucket),
/// concurrent connections per IP and per endpoint, and client messages per connection.
///
/// Refusals happen before the upgrade: 429 (per-IP limits) or 503 (endpoint full), both
/// with `Retry-After`. A client over its message rate gets `rate_limited` error replies;
/// after `max_violations` of them in a row the connection is closed with 1008.
public struct RateLimitFilter: FilterPlugin {
    public static let typeName = "rate_limit"
    public static let spec = PluginSpec(
        summary: "Limit connection attempts and concurrent connections per IP and per endpoint, and messages per connection",
        examples: ["filters:\n  - plugin: rate_limit\n    connect_rate: 5\n    max_connections_per_ip: 50\n    message_rate: 20\n    trusted_proxies: [\"10.0.0.0/8\"]"]
    )

    public struct Config: PluginConfig {
        public var connectRate: Double?
        public var connectBurst: Int?
        public var maxConnectionsPerIP: Int?
        public var maxConnections: Int?
        public var messageRate: Double?
        public var messageBurst: Int?
        public var maxViolations: Int
        public var trustedProxies: [IPAddressRange]
        public var mode: FilterMode

        static let connectRate = OptionalKey<Double>(
            "connect_rate", "number per second", whenAbsent: "none", "New connections per second per client IP (token bucket)."
        )
        static let connectBurst = OptionalKey<Int>("connect_burst", "int", whenAbsent: "2 × connect_rate", "Connections an idle IP may open at once.")
        static let maxConnectionsPerIP = OptionalKey<Int>("max_connections_per_ip", "int", whenAbsent: "none", "Open connections per client IP (429).")
        static let maxConnections = OptionalKey<Int>("max_connections", "int", whenAbsent: "none", "Open connections on this endpoint (503).")
        static let messageRate = OptionalKey<Double>(
            "message_rate", "number per second", whenAbsent: "none", "Client messages per second per connection."
        )
        static let messageBurst = OptionalKey<Int>(
            "message_burst", "int", whenAbsent: "2 × message_rate", "Messages a quiet connection may send at once."
        )
        static let maxViolations = DefaultedKey("max_violations", "int", default: 10, "Rate-limited messages in a row before close 1008.")
        static let trustedProxies = DefaultedKey<[String]>(
            "trusted_proxies", "list of CIDRs", default: [], shown: "[]",
            "Peers whose X-Forwarded-For is believed (the nearest untrusted address is the client)."
        )
        static let mode = FilterMode.key
        public static let keys: [any PluginKey] = [
            Self.connectRate, Self.connectBurst, Self.maxConnectionsPerIP, Self.maxConnections, Self.messageRate, Self.messageBurst,
            Self.maxViolations, Self.trustedProxies, Self.mode,
        ]

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: PluginCodingKey.self)
            connectRate = try container.read(Self.connectRate)
            connectBurst = try container.read(Self.connectBurst)
            maxConnectionsPerIP = try container.read(Self.maxConnectionsPerIP)
            maxConnections = try container.read(Self.maxConnections)
            messageRate = try container.read(Self.messageRate)
            messageBurst = try container.read(Self.messageBurst)
            maxViolations = try container.read(Self.maxViolations)
            let proxies = try container.read(Self.trustedProxies)
            mode = try container.read(Self.mode)
            trustedProxies = try proxies.map { text in
                guard let range = IPAddressRange(text) else { throw ConfigValidationError("invalid CIDR '\(text)' in trusted_proxies", hint: "e.g. 10.0.0.0/8 or ::1/128") }
                return range
            }
            for (name, value) in [("connect_rate", connectRate), ("message_rate", messageRate)] where (value ?? 1) <= 0 {
                throw ConfigValidationError("'\(name)' must be positive")
            }
            for (name, value) in [("connect_burst", connectBurst), ("max_connections_per_ip", maxConnectionsPerIP), ("max_connections", maxConnections), ("message_burst", messageBurst)]
            where (value ?? 1) < 1 {
                throw ConfigValidationError("'\(name)' must be at least 1")
            }
            if maxViolations < 1 { throw ConfigValidationError("'max_violations' must be at least 1") }
            if connectRate == nil && maxConnectionsPerIP == nil && maxConnections == nil && messageRate == nil {
                throw ConfigValidationError("rate_limit sets no limit", hint: "set connect_rate, max_connections_per_ip, max_connections or message_rate")
            }
        }
    }

    public static func build(config: Config, context: FilterContext) async throws -> any Filter {
        RateLimiter(config: config, denials: context.denials)
    }
}

/// Shared state of one `rate_limit` filter instance (one per endpoint).
final class RateLimiter: Filter, @unchecked Sendable {
    let config: RateLimitFilter.Config
    let denials: FilterDenials
    private let lock = NIOLock()
    private var buckets: [String: TokenBucket] = [:]
    private var perIP: [String: Int] = [:]
    private var total = 0

    /// Beyond this many tracked IPs, idle buckets are forgotten.
    static let maximumTrackedAddresses = 100_000

    init(config: RateLimitFilter.Config, denials: FilterDenials) {
        self.config = config
        self.denials = denials
    }

    static func now() -> Int64 { Int64(NIODeadline.now().uptimeNanoseconds) }

    /// The client's address: the peer, or — behind trusted proxies — the nearest
    /// X-Forwarded-For entry that is not itself a trusted proxy.
    func clientAddress(_ request: UpgradeRequest) -> String {
        let peer = request.remoteAddress ?? "unknown"
        guard !config.trustedProxies.isEmpty, config.trustedProxies.contains(where: { $0.contains(peer) }),
            let forwarded = request.header("X-Forwarded-For")
        else { return peer }
        let hops = forwarded.split(separator: ",").map { String($0).trimmingSpaces() }
        for hop in hops.reversed() where IPAddressRange.bytes(hop) != nil {
            if !config.trustedProxies.contains(where: { $0.contains(hop) }) { return hop }
        }
        return peer
    }

    func admit(_ request: UpgradeRequest, principal: Principal?) async -> FilterDecision {
        guard let rate = config.connectRate else { return .admit(principal) }
        let address = clientAddress(request)
        let now = Self.now()
        let retry: Int? = lock.withLock {
            var bucket = buckets[address] ?? TokenBucket(rate: rate, burst: Double(config.connectBurst ?? Int(max(1, rate * 2))), now: now)
            defer {
                buckets[address] = bucket
                if buckets.count > Self.maximumTrackedAddresses { forgetIdleBuckets(now: now) }
            }
            return bucket.take(now: now) ? nil : bucket.retryAfter(now: now)
        }
        guard let retry else { return .admit(principal) }
        return deny(status: 429, reason: "too many connection attempts", retryAfter: retry, address: address, principal: principal)
    }

    /// An open connection re-run by a reload was admitted already: it spends no
    /// connect-rate token (`attach` still counts it against the connection limits).
    func recheck(_ request: UpgradeRequest, principal: Principal?) async -> FilterDecision {
        .admit(principal)
    }

    private func forgetIdleBuckets(now: Int64) {
        for (key, var bucket) in buckets where bucket.isIdle(now: now) { buckets[key] = nil }
    }

    func attach(_ request: UpgradeRequest, principal: Principal?) -> FilterAttachment {
        let address = clientAddress(request)
        let refusal: (Int, String)? = lock.withLock {
            if let limit = config.maxConnections, total >= limit { return (503, "endpoint is at its connection limit") }
            if let limit = config.maxConnectionsPerIP, perIP[address, default: 0] >= limit { return (429, "too many connections from this address") }
            total += 1
            perIP[address, default: 0] += 1
            return nil
        }
        if let (status, reason) = refusal {
            if case .deny(let s, let r, let retry) = deny(status: status, reason: reason, retryAfter: 5, address: address, principal: principal) {
                return .deny(status: s, reason: r, retryAfter: retry)
            }
            // Observe mode: admitted, but nothing was reserved.
            return guardFor(address: address, reserved: false)
        }
        return guardFor(address: address, reserved: true)
    }

    private func guardFor(address: String, reserved: Bool) -> FilterAttachment {
        .guarded(ConnectionLimitGuard(limiter: self, address: address, reserved: reserved))
    }

    func release(address: String) {
        lock.withLock {
            total -= 1
            if let count = perIP[address] {
                perIP[address] = count > 1 ? count - 1 : nil
            }
        }
    }

    /// Records a denial and applies the mode.
    func deny(status: Int, reason: String, retryAfter: Int?, address: String, principal: Principal?) -> FilterDecision {
        denials.apply(.deny(status: status, reason: reason, retryAfter: retryAfter), remote: address, mode: config.mode, principal: principal)
    }
}

/// Per-connection state: the concurrency reservation and the message bucket.
final class ConnectionLimitGuard: ConnectionGuard, @unchecked Sendable {
    private let limiter: RateLimiter
    private let address: String
    private var reserved: Bool
    private var bucket: TokenBucket?
    private var violations = 0
    private let lock = NIOLock()

    init(limiter: RateLimiter, address: String, reserved: Bool) {
        self.limiter = limiter
        self.address = address
        self.reserved = reserved
        if let rate = limiter.config.messageRate {
            bucket = TokenBucket(rate: rate, burst: Double(limiter.config.messageBurst ?? Int(max(1, rate * 2))), now: RateLimiter.now())
        }
    }

    func messageReceived(now: Int64) -> MessageVerdict {
        guard var current = bucket else { return .accept }
        defer { bucket = current }
        if current.take(now: now) {
            violations = 0
            return .accept
        }
        violations += 1
        limiter.denials.record(reason: "message rate exceeded", remote: address, mode: limiter.config.mode)
        if limiter.config.mode == .observe { return .accept }
        if violations >= limiter.config.maxViolations {
            return .close(code: 1008, reason: "message rate exceeded")
        }
        return .reject(code: "rate_limited", message: "more than \(limiter.config.messageRate ?? 0) messages per second; slow down")
    }

    func connectionClosed() {
        let release: Bool = lock.withLock {
            defer { reserved = false }
            return reserved
        }
        if release { limiter.release(address: address) }
    }
}
