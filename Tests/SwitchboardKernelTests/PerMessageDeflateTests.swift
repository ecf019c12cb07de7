import NIOCore
import SwitchboardKernel
import SwitchboardCore
import Testing

@Suite struct PerMessageDeflateNegotiationTests {
    static let shared = PerMessageDeflate.Policy(mode: .shared, serverWindowBits: 15, clientWindowBits: 12)
    static let dedicated = PerMessageDeflate.Policy(mode: .dedicated, serverWindowBits: 10, clientWindowBits: 15)

    static func negotiate(_ header: String, _ policy: PerMessageDeflate.Policy = shared) -> String? {
        PerMessageDeflate.negotiate(offers: PerMessageDeflate.parseOffers([header]), policy: policy)?.responseHeader
    }

    @Test(arguments: [
        ("permessage-deflate", "permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
        ("permessage-deflate; client_max_window_bits", "permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=12"),
        ("permessage-deflate; client_max_window_bits=10", "permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=10"),
        ("permessage-deflate; client_max_window_bits=\"10\"", "permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=10"),
        // Never more than the client offered (RFC 7692 §7.1.2.2), even 8.
        ("permessage-deflate; client_max_window_bits=8", "permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=8"),
        ("permessage-deflate; server_max_window_bits=9", "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9"),
        ("permessage-deflate; server_max_window_bits=15", "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=15"),
        ("permessage-deflate; client_no_context_takeover; server_no_context_takeover",
         "permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
        // Chrome's offer.
        ("permessage-deflate; client_max_window_bits", "permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=12"),
        // An unacceptable first offer falls through to the next one.
        ("permessage-deflate; server_max_window_bits=8, permessage-deflate",
         "permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
        ("x-webkit-deflate-frame, permessage-deflate", "permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
    ])
    func sharedMode(offer: String, response: String) {
        #expect(Self.negotiate(offer) == response)
    }

    @Test(arguments: [
        "permessage-deflate; server_max_window_bits=8",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; server_max_window_bits=010x",
        "permessage-deflate; client_max_window_bits=7",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; unknown_parameter",
        "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
        "x-webkit-deflate-frame",
        "",
    ])
    func declinedOffers(offer: String) {
        #expect(Self.negotiate(offer) == nil)
    }

    @Test func dedicatedModeKeepsContextUnlessTheClientForbidsIt() throws {
        let agreement = try #require(PerMessageDeflate.negotiate(offers: PerMessageDeflate.parseOffers(["permessage-deflate; client_max_window_bits"]), policy: Self.dedicated))
        #expect(agreement.mode == .dedicated)
        #expect(!agreement.serverNoContextTakeover)
        #expect(agreement.serverWindowBits == 10)
        #expect(agreement.responseHeader == "permessage-deflate; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=15")
        let forbidden = try #require(PerMessageDeflate.negotiate(offers: PerMessageDeflate.parseOffers(["permessage-deflate; server_no_context_takeover"]), policy: Self.dedicated))
        #expect(forbidden.mode == .shared)
        #expect(forbidden.serverNoContextTakeover)
    }

    @Test func withoutClientWindowParameterTheClientMayUseFifteenBits() throws {
        let agreement = try #require(PerMessageDeflate.negotiate(offers: PerMessageDeflate.parseOffers(["permessage-deflate"]), policy: Self.shared))
        #expect(agreement.clientWindowBits == 15)
    }
}

@Suite struct DeflateTests {
    static let text = String(repeating: #"{"type":"metrics","topic":"metrics","data":{"produceRate":1500.5,"fetchRate":1200.3}}"#, count: 50)

    @Test(arguments: [9, 12, 15])
    func roundTripsWithoutContextTakeover(windowBits: Int) throws {
        let deflater = try #require(Deflater(settings: DeflateSettings(windowBits: windowBits, level: 6, memLevel: 8)))
        let inflater = try #require(Inflater(windowBits: windowBits))
        for _ in 0..<3 {
            var compressed = ByteBuffer()
            deflater.compress(ByteBuffer(string: Self.text), into: &compressed, resetAfter: true)
            #expect(compressed.readableBytes < Self.text.utf8.count / 5)
            #expect(try inflater.inflate(compressed, limit: 1 << 20, resetAfter: true) == ByteBuffer(string: Self.text))
        }
    }

    @Test func contextTakeoverShrinksRepeatedMessages() throws {
        let deflater = try #require(Deflater(settings: DeflateSettings(windowBits: 15, level: 6, memLevel: 8)))
        let inflater = try #require(Inflater(windowBits: 15))
        let message = ByteBuffer(string: #"{"type":"job_update","job_id":"42","status":"running"}"#)
        var first = ByteBuffer()
        deflater.compress(message, into: &first, resetAfter: false)
        var second = ByteBuffer()
        deflater.compress(message, into: &second, resetAfter: false)
        #expect(second.readableBytes < first.readableBytes)
        #expect(try inflater.inflate(first, limit: 1024, resetAfter: false) == message)
        #expect(try inflater.inflate(second, limit: 1024, resetAfter: false) == message)
    }

    @Test func aDecompressionBombStopsAtTheLimit() throws {
        let deflater = try #require(Deflater(settings: DeflateSettings(windowBits: 15, level: 9, memLevel: 8)))
        var bomb = ByteBuffer()
        deflater.compress(ByteBuffer(repeating: 0, count: 16 * 1024 * 1024), into: &bomb, resetAfter: true)
        #expect(bomb.readableBytes < 40_000)
        let inflater = try #require(Inflater(windowBits: 15))
        #expect(throws: InflateError.tooLarge) { try inflater.inflate(bomb, limit: 64 * 1024, resetAfter: true) }
        // The inflater is usable again afterwards.
        var small = ByteBuffer()
        deflater.compress(ByteBuffer(string: "ok"), into: &small, resetAfter: true)
        #expect(try inflater.inflate(small, limit: 64, resetAfter: true) == ByteBuffer(string: "ok"))
    }

    @Test func garbageIsCorrupt() throws {
        let inflater = try #require(Inflater(windowBits: 15))
        #expect(throws: InflateError.corrupt) { try inflater.inflate(ByteBuffer(bytes: [0xFF, 0xFF, 0xFF, 0xFF, 0x00]), limit: 1024, resetAfter: true) }
    }

    @Test func neverTrapsOnRandomInput() throws {
        var generator = SeededRandom.forTest("PerMessageDeflateTests.neverTrapsOnRandomInput")
        for _ in 0..<2000 {
            let inflater = try #require(Inflater(windowBits: 15))
            let bytes = (0..<Int(generator.next() % 64)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            _ = try? inflater.inflate(ByteBuffer(bytes: bytes), limit: 4096, resetAfter: true)
        }
    }
}
