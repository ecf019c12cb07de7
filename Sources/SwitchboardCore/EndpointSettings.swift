/// Endpoint settings the kernel acts on, declared here so that the kernel needs no
/// configuration module: the YAML decoder reads them as they are.

/// How an endpoint treats client messages.
public enum EndpointMode: String, Sendable, ConfigEnum {
    /// The gateway protocol: subscribe, unsubscribe, ping.
    case pubsub
    /// Every data message is sent straight back (for the Autobahn conformance suite).
    case echo

    public static var configPlaceholder: EndpointMode { .pubsub }
}

/// The slow-consumer policy.
public enum SlowConsumerPolicy: String, Sendable, ConfigEnum {
    /// Drop the oldest queued messages to make room (the client sees a gap).
    case dropOldest = "drop_oldest"
    /// Close the connection with 1008 ("send queue overflow"), naming the last position sent.
    case disconnect
    /// Keep only the newest queued event per topic (metrics-like streams); past
    /// `max_messages` topics, the oldest go as under `drop_oldest`.
    case conflate

    public static var configPlaceholder: SlowConsumerPolicy { .dropOldest }
}
