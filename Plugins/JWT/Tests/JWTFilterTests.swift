import Foundation
import JWTPlugin
import Logging
import SwitchboardConfig
import SwitchboardCore
import SwitchboardTesting
import Testing

/// Config validation and claim mapping of the `jwt` filter. Tokens here are built by hand
/// (base64url + swift-crypto HMAC), not by jwt-kit; the hostile-case table with PyJWT
/// tokens is in Tests/Interop/test_hostile_auth.py.
@Suite struct JWTFilterTests {
    static let secret = "jwt-test-secret-0123456789abcdef0123"

    static let rsa1024 = """
        -----BEGIN PUBLIC KEY-----
        MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQC5Uoaj2wSQr/HY4o3QTg/2zvr9
        0x/ZR6w1IVRVYVYrB8qwt+T1XHxRCBiuVXMXXvP5uWMZNEGrGZ9jQVuqT2ol3Hd6
        BGHHCHBnHOJd3HmGfgHWH0vgE+eLXTmaSF5BDbmLi4QWvolJi96SyPgm/KECzbUV
        rPiMVRBjXaRJEK8L0wIDAQAB
        -----END PUBLIC KEY-----
        """

    static let rsa2048 = """
        -----BEGIN PUBLIC KEY-----
        MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAv5xZYwsvQLoj28ay+vzn
        ivpRUedn5R2Xm9v+6EmNCNerm43lfInLqiGNHH2AaE987PsDsRdLMdri5keov8Na
        Nvt57F//wQ5QYklvoSIX3DohsPENBQZe/ty4YO2u6WmoOEwzaRlFvsi6ST2knJA2
        U/bvXjPOFAxus52TrgvL0Ef+PGs2Hq/gFQj/fPT8EYTwRBaO0hrRPp8ssns634AJ
        SY26AU2rQG16N4KyyYY/fDpZImA1Sqel/g2IHcFpGtyH9m+CIWLQY5DBw8oPq1PU
        ws7OP2wQdHqdYgKx0tDb3KQ0GdSpt2Vc8HW+wyUjWFsFJW/X8DFl3vh0vi3powpX
        OQIDAQAB
        -----END PUBLIC KEY-----
        """

    static func indent(_ pem: String, by spaces: Int) -> String {
        pem.split(separator: "\n").map { String(repeating: " ", count: spaces) + $0 }.joined(separator: "\n")
    }

    func config(_ yaml: String) throws(ConfigurationError) -> JWTFilter.Config {
        try ConfigurationLoader.decodePluginConfig(JWTFilter.Config.self, yaml: yaml, plugin: "jwt")
    }

    func filter(_ yaml: String) async throws -> any Filter {
        try await JWTFilter.build(config: config(yaml), context: FilterContext(endpointPath: "/ws", logger: Logger(label: "test")))
    }

    static func hs256(_ claims: String, header: String = #"{"alg":"HS256","typ":"JWT"}"#, secret: String = secret) -> String {
        TestTokens.hs256(claims, secret: secret, header: header)
    }

    static var now: Int { TestTokens.now }

    @Test(arguments: [
        ("keys: [{algorithm: HS256, secret: short-secret}]", "at least 32 bytes"),
        ("keys: [{algorithm: HS512, secret: \(secret)}]", "at least 64 bytes"),
        ("keys: [{algorithm: RS256, public_key: \"\(rsa1024.replacingOccurrences(of: "\n", with: "\\n"))\"}]", "at least 2048 bits"),
        ("keys: [{algorithm: RS256, secret: \(secret)}]", "not a secret"),
        ("keys: [{algorithm: HS256}]", "exactly one of 'secret' or 'secret_file'"),
        ("keys: [{algorithm: none, secret: \(secret)}]", "expected 'HS256'"),
        ("keys: [{algorithm: RS256, public_key: \"-----BEGIN PRIVATE KEY-----\\nAAAA\\n-----END PRIVATE KEY-----\"}]", "expected a PEM public key"),
        ("keys: [{algorithm: ES256, public_key: \"\(rsa2048.replacingOccurrences(of: "\n", with: "\\n"))\"}]", "not a valid ES256 public key"),
        ("jwks_url: http://auth.example.com/jwks.json", "jwks_url must use https"),
        ("issuer: a\nissuers: [{issuer: b, jwks_url: https://b/jwks}]", "goes inside an 'issuers' entry"),
        ("issuer: a", "no keys for issuer 'a'"),
        ("keys: [{algorithm: HS256, secret: \(secret)}]\nalgorithms: [RS256]", "not in 'algorithms'"),
        ("keys: [{algorithm: HS256, secret: \(secret)}]\ntoken_from: [cookie]", "expected 'header', 'query' or 'protocol'"),
        ("keys: [{algorithm: HS256, secret: \(secret)}]\nleeway: 1h", "between 0s and 5m"),
        ("keys: [{kid: a, algorithm: HS256, secret: \(secret)}, {kid: a, algorithm: HS256, secret: \(secret)}]", "duplicate kid 'a'"),
    ])
    func refusesBadConfigurations(yaml: String, message: String) {
        do {
            _ = try config(yaml)
            Issue.record("accepted: \(yaml)")
        } catch {
            #expect(error.description.contains(message), "\(error.description)")
            #expect(!error.description.contains(Self.secret))
        }
    }

    @Test func acceptsA2048BitRSAKey() throws {
        let parsed = try config("keys:\n  - algorithm: RS256\n    public_key: |\n\(Self.indent(Self.rsa2048, by: 8))")
        #expect(parsed.algorithms == [.rs256])
    }

    @Test func mapsClaimsToThePrincipal() async throws {
        let checker = try await filter("""
            issuer: https://auth.test
            keys: [{algorithm: HS256, secret: \(Self.secret)}]
            claims: {subject: email, roles: realm_access.roles, topics: allowed}
            leeway: 2s
            """)
        let exp = Self.now + 60
        let token = Self.hs256(#"{"iss":"https://auth.test","email":"ops@example.com","realm_access":{"roles":["admin","viewer"]},"allowed":["cluster:*"],"exp":\#(exp)}"#)
        let decision = await checker.admit(UpgradeRequest(path: "/ws", query: [("token", token)], headers: [], remoteAddress: nil), principal: nil)
        let expected = Principal(identity: "ops@example.com", roles: ["admin", "viewer"], topics: [TopicPattern("cluster:*")].compactMap { $0 }, expiresAt: Int64(exp + 2))
        #expect(decision == .admit(expected))
    }

    @Test func refusesWhatTheTokenCannotChoose() async throws {
        let checker = try await filter("keys: [{algorithm: HS256, secret: \(Self.secret)}]")
        let exp = Self.now + 60
        func decide(_ token: String) async -> FilterDecision {
            await checker.admit(UpgradeRequest(path: "/ws", query: [], headers: [("Authorization", "Bearer \(token)")], remoteAddress: nil), principal: nil)
        }
        #expect(await decide(Self.hs256(#"{"sub":"a","exp":\#(exp)}"#)) == .admit(Principal(identity: "a", expiresAt: Int64(exp + 5))))
        // A token with an `iss` does not match a key set configured for tokens without one.
        #expect(await decide(Self.hs256(#"{"sub":"a","iss":"x","exp":\#(exp)}"#)) == .deny(status: 401, reason: "unknown issuer"))
        #expect(await decide(Self.hs256(#"{"sub":"a","exp":\#(exp)}"#, header: #"{"alg":"none"}"#)) == .deny(status: 401, reason: "algorithm none is not accepted"))
        #expect(await decide(Self.hs256(#"{"sub":"a","exp":\#(exp)}"#, header: #"{"alg":"HS256","crit":["b64"]}"#)) == .deny(status: 401, reason: "unsupported critical header"))
        #expect(await decide(Self.hs256(#"{"sub":"a","exp":\#(exp)}"#, secret: Self.secret + "x")) == .deny(status: 401, reason: "invalid signature"))
        #expect(await decide(Self.hs256(#"{"exp":\#(exp)}"#)) == .deny(status: 401, reason: "token has no subject"))
        #expect(await decide(Self.hs256(#"{"sub":"a","exp":\#(exp),"topics":"x"}"#)) == .deny(status: 401, reason: "invalid topics claim"))
    }

    /// A validly signed token chooses its own `exp`: values far in the future trapped the
    /// conversion to Int64 (9.3e18) and the handler's milliseconds (1e16). They mean "no
    /// expiry here" now; JSON numbers past Int64 arrive as doubles.
    @Test(arguments: ["10000000000000000", "9300000000000000000", "1e300", "1.7976931348623157e308"])
    func farFutureExpiryDoesNotTrap(exp: String) async throws {
        let checker = try await filter("keys: [{algorithm: HS256, secret: \(Self.secret)}]")
        let token = Self.hs256(#"{"sub":"a","exp":\#(exp)}"#)
        let decision = await checker.admit(UpgradeRequest(path: "/ws", query: [], headers: [("Authorization", "Bearer \(token)")], remoteAddress: nil), principal: nil)
        #expect(decision == .admit(Principal(identity: "a", expiresAt: nil)))
    }

    @Test func observeModeAdmitsAndCounts() async throws {
        let denials = FilterDenials(filter: "jwt", endpoint: "/ws", logger: Logger(label: "test"))
        let checker = try await JWTFilter.build(
            config: config("keys: [{algorithm: HS256, secret: \(Self.secret)}]\nmode: observe"),
            context: FilterContext(endpointPath: "/ws", logger: Logger(label: "test"), denials: denials)
        )
        let decision = await checker.admit(UpgradeRequest(path: "/ws", query: [], headers: [], remoteAddress: "127.0.0.1"), principal: nil)
        #expect(decision == .admit(nil))
        #expect(denials.snapshot() == ["filter": "jwt", "denied": .object(JSONObject()), "observed": ["missing token": 1]])
    }

    /// Random and mutated tokens never trap and are always refused with 401.
    @Test func neverTrapsOnHostileTokens() async throws {
        let checker = try await filter("keys: [{algorithm: HS256, secret: \(Self.secret)}]")
        var generator = SeededRandom.forTest("JWTFilterTests.neverTrapsOnHostileTokens")
        let valid = Self.hs256(#"{"sub":"a","exp":\#(Self.now + 60)}"#)
        let alphabet = Array("ABCxyz019-_.=+/ {}\"\\\u{0}é".unicodeScalars)
        for round in 0..<2000 {
            var token: String
            if round % 2 == 0 {
                token = String(String.UnicodeScalarView((0..<Int.random(in: 0...120, using: &generator)).map { _ in alphabet.randomElement(using: &generator) ?? "A" }))
            } else {
                var bytes = Array(valid.utf8)
                let index = Int.random(in: 0..<bytes.count, using: &generator)
                bytes[index] = UInt8.random(in: 0x21...0x7e, using: &generator)
                token = String(decoding: bytes, as: UTF8.self)
                if token == valid { continue }
            }
            let decision = await checker.admit(UpgradeRequest(path: "/ws", query: [("token", token)], headers: [], remoteAddress: nil), principal: nil)
            guard case .deny(401, _, _) = decision else {
                Issue.record("admitted a mutated token: \(token)")
                return
            }
        }
    }
}
