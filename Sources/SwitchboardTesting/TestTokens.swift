import Crypto
import Foundation

/// JWTs built by hand for tests — base64url and swift-crypto's HMAC, no JWT library — so a
/// test does not trust the code it checks.
public enum TestTokens {
    public static func base64URL(_ bytes: some Sequence<UInt8>) -> String {
        Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    /// An HS256 token over `claims` (JSON text) with `header` (JSON text).
    public static func hs256(_ claims: String, secret: String, header: String = #"{"alg":"HS256","typ":"JWT"}"#) -> String {
        let input = base64URL(Array(header.utf8)) + "." + base64URL(Array(claims.utf8))
        let mac = HMAC<SHA256>.authenticationCode(for: Array(input.utf8), using: SymmetricKey(data: Array(secret.utf8)))
        return input + "." + base64URL(mac)
    }

    /// Seconds since the epoch.
    public static var now: Int { Int(Date().timeIntervalSince1970) }
}
