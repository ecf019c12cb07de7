#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// One fuzz target: the name `SWITCHBOARD_FUZZ_TARGET` selects and the function that feeds
/// one input to a parser and checks its invariants.
struct FuzzTarget: Sendable {
    let name: String
    let summary: String
    let run: @Sendable (UnsafeRawBufferPointer) -> Void
}

/// Every target, in the order `scripts/fuzz.sh all` runs them.
let fuzzTargets: [FuzzTarget] = [
    FuzzTarget(name: "json", summary: "JSONParser, JSONWriter round trip, JSON event envelopes") { fuzzJSON($0) },
    FuzzTarget(name: "client-message", summary: "client JSON messages: ClientMessageDecoding, JSONEventEncoder.decode, replies, topic patterns") {
        fuzzClientMessage($0)
    },
    FuzzTarget(name: "msgpack", summary: "MessagePackReader.read/validate, MessagePackEventEncoder.decode and round trips") { fuzzMessagePack($0) },
    FuzzTarget(name: "resp", summary: "RESPParser fed whole and in two pieces, with small limits; RESPCommand round trip") { fuzzRESP($0) },
    FuzzTarget(name: "inflate", summary: "Inflater output limit; Deflater → Inflater round trip") { fuzzInflate($0) },
    FuzzTarget(name: "config", summary: "ConfigurationLoader.load(yaml:file:) with the json encoder and webhook source") { fuzzConfig($0) },
    FuzzTarget(name: "deflate-offer", summary: "Sec-WebSocket-Extensions offers: PerMessageDeflate.parseOffers/negotiate") { fuzzDeflateOffer($0) },
    FuzzTarget(name: "websocket-frames", summary: "client frames through WebSocketInboundStateMachine: reassembly, limits, inflate, UTF-8, close handshake") { fuzzWebSocketFrames($0) },
    FuzzTarget(name: "websocket-wire", summary: "a client's raw bytes through WebSocketFrameParser, cut into reads: header forms, masks, limits") { fuzzWebSocketWire($0) },
]

/// The target named by `SWITCHBOARD_FUZZ_TARGET`, looked up once; any other value prints
/// the list and ends the process with status 2.
let selectedFuzzTarget: FuzzTarget = {
    let requested = getenv("SWITCHBOARD_FUZZ_TARGET").map { String(cString: $0) } ?? ""
    if let target = fuzzTargets.first(where: { $0.name == requested }) {
        return target
    }
    var message = requested.isEmpty
        ? "SWITCHBOARD_FUZZ_TARGET is not set."
        : "SWITCHBOARD_FUZZ_TARGET=\(requested) names no fuzz target."
    message += " Targets:"
    for target in fuzzTargets {
        message += "\n  \(target.name)\(String(repeating: " ", count: max(1, 18 - target.name.count)))\(target.summary)"
    }
    writeToStandardError(message)
    exit(2)
}()
