import SwitchboardCore

/// permessage-deflate (RFC 7692) negotiation: parses the client's offers and decides the
/// response. A pure function of the offer and the endpoint's settings, so it is tested
/// table-style without sockets.
public enum PerMessageDeflate {
    /// How compressed frames are produced for a connection.
    public enum Mode: String, Sendable, Equatable {
        /// `server_no_context_takeover`: each event is compressed once per variant and shared.
        case shared
        /// Context takeover per connection (better ratio, per-connection state and CPU).
        case dedicated
    }

    /// What the endpoint offers.
    public struct Policy: Sendable, Equatable {
        public var mode: Mode
        /// Largest server window we use (9–15).
        public var serverWindowBits: Int
        /// Largest client window we ask for when the client lets us choose (9–15).
        public var clientWindowBits: Int

        public init(mode: Mode, serverWindowBits: Int, clientWindowBits: Int) {
            self.mode = mode
            self.serverWindowBits = serverWindowBits
            self.clientWindowBits = clientWindowBits
        }
    }

    /// The accepted parameters for one connection.
    public struct Agreement: Sendable, Equatable {
        public var mode: Mode
        /// Window the server compresses with.
        public var serverWindowBits: Int
        /// Whether the server must reset its compressor after every message.
        public var serverNoContextTakeover: Bool
        /// Window the client may compress with (our inflater's size).
        public var clientWindowBits: Int
        /// Whether the client resets after every message (our inflater can be reset too).
        public var clientNoContextTakeover: Bool
        /// The `Sec-WebSocket-Extensions` response value.
        public var responseHeader: String
    }

    /// One parsed extension offer.
    public struct Offer: Equatable, Sendable {
        public var name: String
        public var parameters: [(name: String, value: String?)]

        public static func == (lhs: Offer, rhs: Offer) -> Bool {
            lhs.name == rhs.name && lhs.parameters.elementsEqual(rhs.parameters) { $0.name == $1.name && $0.value == $1.value }
        }
    }

    /// Parses `Sec-WebSocket-Extensions` header values into offers (RFC 7230 lists with
    /// quoted-string parameter values).
    public static func parseOffers(_ headerValues: [String]) -> [Offer] {
        var offers: [Offer] = []
        for value in headerValues {
            for element in splitOutsideQuotes(value, separator: ",") {
                let parts = splitOutsideQuotes(element, separator: ";").map { $0.trimmingSpaces() }
                guard let name = parts.first, !name.isEmpty else { continue }
                var parameters: [(name: String, value: String?)] = []
                for part in parts.dropFirst() where !part.isEmpty {
                    if let equals = part.firstIndex(of: "=") {
                        var parameterValue = String(part[part.index(after: equals)...]).trimmingSpaces()
                        if parameterValue.count >= 2, parameterValue.hasPrefix("\""), parameterValue.hasSuffix("\"") {
                            parameterValue = String(parameterValue.dropFirst().dropLast())
                        }
                        parameters.append((String(part[..<equals]).trimmingSpaces().lowercased(), parameterValue))
                    } else {
                        parameters.append((part.lowercased(), nil))
                    }
                }
                offers.append(Offer(name: name.lowercased(), parameters: parameters))
            }
        }
        return offers
    }

    /// Accepts the first acceptable permessage-deflate offer, or returns `nil` (no
    /// compression) when there is none. Offers with unknown or repeated parameters or
    /// invalid values are skipped, as RFC 7692 §5 requires; so are offers demanding a
    /// server window of 8 bits, which zlib cannot produce for raw deflate.
    public static func negotiate(offers: [Offer], policy: Policy) -> Agreement? {
        for offer in offers where offer.name == "permessage-deflate" {
            if let agreement = accept(offer, policy: policy) { return agreement }
        }
        return nil
    }

    private static func windowBits(_ value: String?) -> Int? {
        guard let value, let bits = Int(value), (8...15).contains(bits), value.allSatisfy(\.isNumber) else { return nil }
        return bits
    }

    private static func accept(_ offer: Offer, policy: Policy) -> Agreement? {
        var serverNoContextTakeover = false
        var clientNoContextTakeover = false
        var requestedServerBits: Int?
        var clientBitsOffered = false
        var clientBitsLimit = 15
        var seen: Set<String> = []
        for parameter in offer.parameters {
            guard seen.insert(parameter.name).inserted else { return nil }
            switch parameter.name {
            case "server_no_context_takeover":
                guard parameter.value == nil else { return nil }
                serverNoContextTakeover = true
            case "client_no_context_takeover":
                guard parameter.value == nil else { return nil }
                clientNoContextTakeover = true
            case "server_max_window_bits":
                guard let bits = windowBits(parameter.value) else { return nil }
                requestedServerBits = bits
            case "client_max_window_bits":
                clientBitsOffered = true
                if let value = parameter.value {
                    guard let bits = windowBits(value) else { return nil }
                    clientBitsLimit = bits
                }
            default:
                return nil
            }
        }
        let serverBits = min(policy.serverWindowBits, requestedServerBits ?? 15)
        guard serverBits >= 9 else { return nil }
        let mode: Mode = serverNoContextTakeover ? .shared : policy.mode
        let noTakeover = mode == .shared
        // Without client_max_window_bits in the offer the client may use 15 bits.
        // The answer never exceeds what the client offered (RFC 7692 §7.1.2.2), even 8; our
        // inflater uses at least 9 bits, which reads any stream made with a smaller window.
        let announcedClientBits = min(policy.clientWindowBits, clientBitsLimit)
        let clientBits = clientBitsOffered ? max(9, announcedClientBits) : 15

        // We always ask the client not to take context over (RFC 7692 §7.1.1.2 lets a server
        // add this parameter to any offer): each client message then inflates on its own,
        // with the event loop's shared inflater, and no connection holds zlib state for it.
        _ = clientNoContextTakeover
        var response = "permessage-deflate"
        if noTakeover { response += "; server_no_context_takeover" }
        response += "; client_no_context_takeover"
        if requestedServerBits != nil || serverBits < 15 { response += "; server_max_window_bits=\(serverBits)" }
        if clientBitsOffered { response += "; client_max_window_bits=\(announcedClientBits)" }
        return Agreement(
            mode: mode,
            serverWindowBits: serverBits,
            serverNoContextTakeover: noTakeover,
            clientWindowBits: clientBits,
            clientNoContextTakeover: true,
            responseHeader: response
        )
    }

    private static func splitOutsideQuotes(_ text: String, separator: Character) -> [String] {
        var parts: [String] = []
        var current = ""
        var quoted = false
        for character in text {
            if character == "\"" { quoted.toggle() }
            if character == separator && !quoted {
                parts.append(current)
                current = ""
            } else {
                current.append(character)
            }
        }
        parts.append(current)
        return parts
    }
}
