/// Where an event stands in its topic's history: the history's epoch and the event's
/// offset in it.
///
/// The epoch names one unbroken history: it changes whenever history was lost (a restart
/// without a shared backend), so a position from an older epoch can never be mistaken for
/// one of the current history. Within an epoch, a topic's offsets only grow (1, 2, 3, …);
/// offset 0 means "before the first event".
///
/// On the wire: `{"epoch":"k3x9f2","offset":41}` in envelopes and `since`, and
/// `k3x9f2:41` as an SSE event id (`Last-Event-ID`).
public struct StreamPosition: Sendable, Hashable, CustomStringConvertible {
    public var epoch: String
    public var offset: Int64

    public init(epoch: String, offset: Int64) {
        self.epoch = epoch
        self.offset = offset
    }

    /// The longest epoch accepted from a client (the gateway's own are 12 characters).
    public static let maximumEpochLength = 64

    /// `{"epoch": …, "offset": …}`.
    public var jsonValue: JSONValue {
        ["epoch": .string(epoch), "offset": .int(offset)]
    }

    /// Reads `{"epoch": string, "offset": integer ≥ 0}`; nil for anything else.
    public init?(json: JSONValue) {
        guard case .object(let object) = json,
            let epoch = object["epoch"]?.stringValue, !epoch.isEmpty, epoch.utf8.count <= Self.maximumEpochLength,
            case .int(let offset)? = object["offset"], offset >= 0
        else { return nil }
        self.init(epoch: epoch, offset: offset)
    }

    /// `epoch:offset`, the SSE event id.
    public var description: String { "\(epoch):\(offset)" }

    /// Reads `epoch:offset` (an SSE `Last-Event-ID`); nil for anything else.
    public init?(eventID: String) {
        guard let colon = eventID.utf8.lastIndex(of: UInt8(ascii: ":")), let epoch = Self.epoch(parsing: eventID[..<colon]),
            let offset = Self.offset(parsing: eventID[eventID.index(after: colon)...])
        else { return nil }
        self.init(epoch: epoch, offset: offset)
    }

    /// An epoch read from a client: 1 to ``maximumEpochLength`` bytes.
    public static func epoch(parsing text: Substring) -> String? {
        text.isEmpty || text.utf8.count > maximumEpochLength ? nil : String(text)
    }

    /// An offset read from a client: 1 to 18 ASCII digits (so it fits an Int64).
    public static func offset(parsing digits: Substring) -> Int64? {
        guard !digits.isEmpty, digits.utf8.count <= 18, digits.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") })
        else { return nil }
        return Int64(digits)
    }
}
