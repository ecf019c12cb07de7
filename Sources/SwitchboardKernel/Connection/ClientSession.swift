import SwitchboardCore

/// The client protocol of one connection as a value type: subscriptions and their
/// authorisation, `ping`, `refresh` and the credential's expiry.
///
/// It decides; the connection handler performs the returned actions in order (subscribe
/// on the shard, reply, replay retained events, start a verification, arm a timer), after
/// the call has returned.
public struct ClientSession {
    /// One step for the connection handler.
    public enum Action: Equatable {
        /// Send this reply to the client.
        case reply(ServerReply)
        /// A subscription refused by the topic rules: count it and send the reply.
        case forbidden(ServerReply)
        /// Add the subscription on the connection's shard.
        case subscribe(TopicPattern)
        /// Remove the subscription from the connection's shard.
        case unsubscribe(TopicPattern)
        /// Send the retained events of the topics these patterns match.
        case replayRetained([TopicPattern])
        /// A client's subscribe: look the topic's history up on the shard, add the
        /// subscription, reply `subscribed` (with the position, when the topic keeps
        /// history) and send what the history replays, all in one loop tick.
        case join(TopicPattern, reply: String, SubscribeOptions)
        /// Ask the endpoint's filters to verify this credential (off the event loop), then
        /// call ``refreshFinished(_:pipeline:nowMilliseconds:)``.
        case verifyRefresh(String)
        /// (Re-)arm the expiry timer to fire after this many milliseconds; `nil` disarms it.
        case armExpiry(milliseconds: Int64?)
    }

    /// The longest time an expiry timer is armed for; a credential valid for longer than
    /// this (a century) never closes the connection. Keeps the arithmetic on untrusted
    /// `exp` claims far from overflow.
    public static let maximumExpiryDelay: Int64 = 100 * 365 * 24 * 3600 * 1000

    /// Who the connection belongs to; replaced by an accepted refresh.
    public private(set) var principal: Principal?
    /// Current subscriptions, in the order they were made.
    public private(set) var subscriptions: [TopicPattern] = []
    private var refreshInFlight = false

    public init(principal: Principal?) {
        self.principal = principal
    }

    /// The connection was admitted: its default subscriptions and expiry.
    public mutating func start(pipeline: EndpointPipeline, nowMilliseconds: Int64) -> [Action] {
        var actions: [Action] = []
        if pipeline.mode == .pubsub {
            for pattern in pipeline.defaultSubscriptions
            where pipeline.mayTopic(pattern, principal: principal) && !subscriptions.contains(pattern) {
                subscriptions.append(pattern)
                actions.append(.subscribe(pattern))
            }
            if !subscriptions.isEmpty { actions.append(.replayRetained(subscriptions)) }
        }
        if let delay = expiryDelay(nowMilliseconds: nowMilliseconds) { actions.append(.armExpiry(milliseconds: delay)) }
        return actions
    }

    /// Milliseconds until the principal's credential expires (0 if it already has), or nil
    /// when it does not expire (or not within ``maximumExpiryDelay``).
    public func expiryDelay(nowMilliseconds: Int64) -> Int64? {
        guard let expiresAt = principal?.expiresAt else { return nil }
        let (expiresAtMilliseconds, overflow) = expiresAt.multipliedReportingOverflow(by: 1000)
        if overflow { return expiresAt < 0 ? 0 : nil }
        let (delay, overflowed) = expiresAtMilliseconds.subtractingReportingOverflow(nowMilliseconds)
        if overflowed { return expiresAtMilliseconds < 0 ? 0 : nil }
        guard delay <= Self.maximumExpiryDelay else { return nil }
        return max(0, delay)
    }

    /// A decoded client message.
    public mutating func received(_ message: ClientMessage, pipeline: EndpointPipeline) -> [Action] {
        switch message {
        case .ping:
            return [.reply(.pong)]
        case .subscribe(let text, let options):
            let pattern: TopicPattern
            switch Self.topicPattern(text, pipeline: pipeline) {
            case .success(let parsed): pattern = parsed
            case .failure(let refusal): return [.reply(.error(code: refusal.code, message: refusal.message))]
            }
            guard pipeline.mayTopic(pattern, principal: principal) else {
                return [.forbidden(.error(code: "forbidden", message: "subscription to '\(Self.excerpt(text))' is not allowed"))]
            }
            if pattern.isWildcard && !options.isEmpty {
                return [.reply(.error(code: "bad_message", message: "'since' and 'last' need an exact topic: positions are per topic"))]
            }
            // Already subscribed: events after any position were delivered live already.
            if subscriptions.contains(pattern) { return [.reply(.subscribed(text))] }
            guard subscriptions.count < pipeline.maxSubscriptions else {
                return [.reply(.error(code: "too_many_subscriptions", message: "at most \(pipeline.maxSubscriptions) subscriptions per connection"))]
            }
            subscriptions.append(pattern)
            return [.join(pattern, reply: text, options)]
        case .unsubscribe(let text):
            guard let pattern = TopicPattern(text), let index = subscriptions.firstIndex(of: pattern) else {
                return [.reply(.error(code: "not_subscribed", message: "not subscribed to '\(Self.excerpt(text))'"))]
            }
            subscriptions.remove(at: index)
            return [.unsubscribe(pattern), .reply(.unsubscribed(text))]
        case .other("refresh", let message):
            guard let token = message["data"]?.stringValue ?? message["data"]?["token"]?.stringValue, !token.isEmpty else {
                return [.reply(.error(code: "bad_message", message: "refresh needs the new token in \"data\""))]
            }
            guard !refreshInFlight else {
                return [.reply(.error(code: "refresh_in_progress", message: "a refresh is already being verified"))]
            }
            refreshInFlight = true
            return [.verifyRefresh(token)]
        case .other(let type, _):
            return [.reply(.error(code: "unknown_type", message: "unknown message type '\(Self.excerpt(type))'; expected subscribe, unsubscribe, ping or refresh"))]
        }
    }

    /// `text` as a topic or pattern this endpoint accepts (syntax and `max_topic_length`), or
    /// the `bad_topic` refusal — for subscribes over any transport.
    public static func topicPattern(_ text: String, pipeline: EndpointPipeline) -> Result<TopicPattern, ClientMessageError> {
        guard text.utf8.count <= pipeline.maxTopicLength, let pattern = TopicPattern(text) else {
            return .failure(ClientMessageError(
                code: "bad_topic",
                message: "invalid topic '\(excerpt(text))': \(TopicPattern.syntaxHelp) (at most \(pipeline.maxTopicLength) bytes here)"
            ))
        }
        return .success(pattern)
    }

    /// The filters' answer to a `refresh` (`nil`: no filter takes refresh).
    public mutating func refreshFinished(_ decision: FilterDecision?, pipeline: EndpointPipeline, nowMilliseconds: Int64) -> [Action] {
        refreshInFlight = false
        switch decision {
        case nil:
            return [.reply(.error(code: "unknown_type", message: "no filter on this endpoint takes refresh"))]
        case .deny(_, let reason, _)?:
            return [.reply(.error(code: "refresh_failed", message: Self.excerpt(reason, limit: 200)))]
        case .admit(let established)?:
            guard let established else {
                return [.reply(.error(code: "refresh_failed", message: "the new credential establishes no identity"))]
            }
            if let current = principal, current.identity != established.identity {
                return [.reply(.error(code: "refresh_failed", message: "the new token is for a different subject"))]
            }
            // The new credential may grant less: `adopt` drops what it no longer allows.
            return adopt(established, pipeline: pipeline, nowMilliseconds: nowMilliseconds) + [.reply(.refreshed(expiresAt: established.expiresAt))]
        }
    }

    /// A reload's filters admitted the connection again, establishing `established`:
    /// subscriptions it (or the endpoint's new topics) no longer allow are dropped, each with
    /// an `unsubscribed` reply.
    public mutating func adopt(_ established: Principal?, pipeline: EndpointPipeline, nowMilliseconds: Int64) -> [Action] {
        principal = established
        var actions: [Action] = [.armExpiry(milliseconds: expiryDelay(nowMilliseconds: nowMilliseconds))]
        for pattern in subscriptions where !pipeline.mayTopic(pattern, principal: established) {
            actions.append(.unsubscribe(pattern))
            actions.append(.reply(.unsubscribed(pattern.text)))
        }
        subscriptions.removeAll { !pipeline.mayTopic($0, principal: established) }
        return actions
    }

    /// The connection is gone: the subscriptions to remove from the shard.
    public mutating func end() -> [TopicPattern] {
        defer { subscriptions = [] }
        return subscriptions
    }

    /// At most `limit` characters of client-supplied text, for error replies: a reply never
    /// echoes a hostile field back in full.
    public static func excerpt(_ text: String, limit: Int = 64) -> String {
        guard text.count > limit else { return text }
        return text.prefix(limit) + "…"
    }
}
