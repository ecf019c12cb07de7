import SwitchboardCore

/// One endpoint folded into an immutable value at start-up: encoders resolved to variants,
/// filters built, limits in plain numbers. Nothing is looked up by name per message.
public final class EndpointPipeline: Sendable {
    /// An encoder a client may pick, with the kernel variant it maps to.
    public struct EncoderChoice: Sendable {
        public let encoder: any EventEncoder
        public let variant: VariantID

        public init(encoder: any EventEncoder, variant: VariantID) {
            self.encoder = encoder
            self.variant = variant
        }
    }

    public let path: String
    /// Allowed encoders; the first is the default.
    public let encoders: [EncoderChoice]
    public let topics: [TopicPattern]
    public let defaultSubscriptions: [TopicPattern]
    public let filters: [any Filter]
    /// Each filter's denial counters, in filter order.
    public let filterDenials: [FilterDenials]
    public let heartbeatInterval: Duration
    public let heartbeatTimeout: Duration
    public let maxMessageSize: Int
    public let maxSubscriptions: Int
    /// Longest topic or pattern a client may subscribe to, in bytes.
    public let maxTopicLength: Int
    /// Deepest nesting of a client message (JSON or MessagePack).
    public let maxMessageDepth: Int
    /// Client messages per second one connection may send (control frames included), with
    /// a burst of twice that; `nil` = unlimited.
    public let maxMessageRate: Double?
    public let sendQueue: SendQueueLimits
    public let mode: EndpointMode
    /// How long a close handshake may take before the socket is closed anyway.
    public let closeTimeout: Duration
    /// permessage-deflate, when the endpoint enables it.
    public let compression: EndpointCompression?
    /// Role → allowed topic patterns (`*` = every connection); `nil` = no role rules.
    public let permissions: [String: [TopicPattern]]?

    public init(
        path: String,
        encoders: [EncoderChoice],
        topics: [TopicPattern],
        defaultSubscriptions: [TopicPattern],
        filters: [any Filter],
        filterDenials: [FilterDenials] = [],
        heartbeatInterval: Duration,
        heartbeatTimeout: Duration,
        maxMessageSize: Int,
        maxSubscriptions: Int,
        maxTopicLength: Int = 256,
        maxMessageDepth: Int = 32,
        maxMessageRate: Double? = nil,
        sendQueue: SendQueueLimits = SendQueueLimits(),
        mode: EndpointMode,
        closeTimeout: Duration = .seconds(2),
        compression: EndpointCompression? = nil,
        permissions: [String: [TopicPattern]]? = nil
    ) {
        self.path = path
        self.encoders = encoders
        self.topics = topics
        self.defaultSubscriptions = defaultSubscriptions
        self.filters = filters
        self.filterDenials = filterDenials
        self.heartbeatInterval = heartbeatInterval
        self.heartbeatTimeout = heartbeatTimeout
        self.maxMessageSize = maxMessageSize
        self.maxSubscriptions = maxSubscriptions
        self.maxTopicLength = maxTopicLength
        self.maxMessageDepth = maxMessageDepth
        self.maxMessageRate = maxMessageRate.flatMap { $0 > 0 ? $0 : nil }
        self.sendQueue = sendQueue
        self.mode = mode
        self.closeTimeout = closeTimeout
        self.compression = compression
        self.permissions = permissions
    }

    /// Why a handshake's encoder request cannot be met.
    public struct NegotiationError: Error, Sendable, Equatable {
        public let message: String
    }

    /// Picks the encoder from `?format=` or the `Sec-WebSocket-Protocol` offers.
    ///
    /// Returns the choice and, when it came from a subprotocol offer, the subprotocol to
    /// echo in the response (RFC 6455 §4.2.2).
    public func negotiate(format: String?, offeredSubprotocols: [String]) -> Result<(EncoderChoice, String?), NegotiationError> {
        if let format {
            guard let choice = encoders.first(where: { $0.encoder.name == format }) else {
                let allowed = encoders.map(\.encoder.name).joined(separator: ", ")
                return .failure(.init(message: "format '\(format)' is not offered on \(path); allowed: \(allowed)"))
            }
            let echoed = offeredSubprotocols.contains(choice.encoder.subprotocol) ? choice.encoder.subprotocol : nil
            return .success((choice, echoed))
        }
        let known = offeredSubprotocols.filter { offer in
            encoders.contains { $0.encoder.subprotocol == offer }
        }
        if let first = known.first, let choice = encoders.first(where: { $0.encoder.subprotocol == first }) {
            return .success((choice, first))
        }
        let ours = offeredSubprotocols.filter { $0.hasPrefix("switchboard.") }
        if !ours.isEmpty {
            let allowed = encoders.map(\.encoder.subprotocol).joined(separator: ", ")
            return .failure(.init(message: "subprotocol '\(ours[0])' is not offered on \(path); allowed: \(allowed)"))
        }
        guard let first = encoders.first else {
            return .failure(.init(message: "endpoint \(path) has no encoder"))
        }
        return .success((first, nil))
    }

    /// Whether a connection with `principal` may subscribe to `pattern`.
    public func mayTopic(_ pattern: TopicPattern, principal: Principal?) -> Bool {
        guard topics.covers(pattern) else { return false }
        if let allowed = principal?.topics, !allowed.covers(pattern) { return false }
        if let permissions {
            let roles = ["*"] + (principal?.roles ?? [])
            guard roles.contains(where: { permissions[$0]?.covers(pattern) == true }) else { return false }
        }
        return filters.allSatisfy { $0.allowSubscription(to: pattern.text, principal: principal) }
    }
}

/// An endpoint's permessage-deflate settings, resolved at start-up.
public struct EndpointCompression: Sendable {
    public let policy: PerMessageDeflate.Policy
    public let profile: CompressionProfile
    /// Node-wide budget for dedicated compressors.
    public let maxMemory: Int

    public init(policy: PerMessageDeflate.Policy, profile: CompressionProfile, maxMemory: Int) {
        self.policy = policy
        self.profile = profile
        self.maxMemory = maxMemory
    }

    /// Compressor settings for a connection with `agreement`.
    public func settings(for agreement: PerMessageDeflate.Agreement) -> DeflateSettings {
        DeflateSettings(windowBits: agreement.serverWindowBits, level: profile.level, memLevel: profile.memLevel)
    }
}

/// Bounds of one connection's outbound queue and what happens when a client reads too
/// slowly (`send_queue:` in the endpoint's YAML).
public struct SendQueueLimits: Sendable, Equatable {
    /// Most messages waiting for one connection.
    public var maxMessages: Int
    /// Most bytes waiting for one connection.
    public var maxBytes: Int
    /// What to do when either bound is hit.
    public var policy: SlowConsumerPolicy

    public init(maxMessages: Int = 1024, maxBytes: Int = 4 * 1024 * 1024, policy: SlowConsumerPolicy = .dropOldest) {
        self.maxMessages = maxMessages
        self.maxBytes = maxBytes
        self.policy = policy
    }
}
