import CryptoExtras
import Foundation
import JWTKit
import SwitchboardCore

/// The signature algorithms the `jwt` filter accepts (`none` is deliberately absent).
public enum JWTAlgorithmName: String, Sendable, ConfigEnum {
    case hs256 = "HS256", hs384 = "HS384", hs512 = "HS512"
    case rs256 = "RS256", rs384 = "RS384", rs512 = "RS512"
    case es256 = "ES256", es384 = "ES384"
    case eddsa = "EdDSA"

    public static var configPlaceholder: JWTAlgorithmName { .hs256 }

    enum Family { case hmac, rsa, ecdsa, eddsa }

    var family: Family {
        switch self {
        case .hs256, .hs384, .hs512: return .hmac
        case .rs256, .rs384, .rs512: return .rsa
        case .es256, .es384: return .ecdsa
        case .eddsa: return .eddsa
        }
    }

    var digest: DigestAlgorithm {
        switch self {
        case .hs384, .rs384, .es384: return .sha384
        case .hs512, .rs512: return .sha512
        default: return .sha256
        }
    }

    /// Shortest acceptable HMAC secret: the hash output length (RFC 7518 §3.2).
    var minimumSecretBytes: Int {
        switch self {
        case .hs384: return 48
        case .hs512: return 64
        default: return 32
        }
    }
}

/// Public key material, parsed and checked while the configuration is read so that a
/// bad key is a config error with a line number, not a failure at the first connection.
enum VerificationKey: Sendable {
    case hmac(HMACKey)
    case rsa(JWTKit.Insecure.RSA.PublicKey)
    case es256(ES256PublicKey)
    case es384(ES384PublicKey)
    case eddsa(EdDSA.PublicKey)

    /// A key collection holding just this key as its default.
    func collection(algorithm: JWTAlgorithmName) async -> JWTKeyCollection {
        let collection = JWTKeyCollection()
        switch self {
        case .hmac(let key): await collection.add(hmac: key, digestAlgorithm: algorithm.digest)
        case .rsa(let key): await collection.add(rsa: key, digestAlgorithm: algorithm.digest)
        case .es256(let key): await collection.add(ecdsa: key)
        case .es384(let key): await collection.add(ecdsa: key)
        case .eddsa(let key): await collection.add(eddsa: key)
        }
        return collection
    }
}

/// One configured key.
public struct KeyConfig: PluginConfig {
    public var kid: String?
    public var algorithm: JWTAlgorithmName
    let key: VerificationKey

    static let kid = OptionalKey<String>("kid", "string", "Key ID; a token naming a `kid` is verified only by the key with that ID.")
    static let algorithm = RequiredKey<JWTAlgorithmName>(
        "algorithm", "HS256 | HS384 | HS512 | RS256 | RS384 | RS512 | ES256 | ES384 | EdDSA", "Algorithm this key verifies."
    )
    static let secret = OptionalKey<String>("secret", "string", "HMAC secret (use ${ENV}), at least as many bytes as the hash output.")
    static let secretFile = OptionalKey<String>("secret_file", "path", "File holding the HMAC secret (a trailing newline is ignored).")
    static let publicKey = OptionalKey<String>("public_key", "PEM", "Public key for RS, ES and EdDSA (`-----BEGIN PUBLIC KEY-----`).")
    static let publicKeyFile = OptionalKey<String>("public_key_file", "path", "File holding the PEM public key.")
    public static let keys: [any PluginKey] = [
        Self.kid, Self.algorithm, Self.secret, Self.secretFile, Self.publicKey, Self.publicKeyFile,
    ]

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: PluginCodingKey.self)
        kid = try container.read(Self.kid)
        algorithm = try container.read(Self.algorithm)
        let secret = try container.read(Self.secret)
        let secretFile = try container.read(Self.secretFile)
        let publicKey = try container.read(Self.publicKey)
        let publicKeyFile = try container.read(Self.publicKeyFile)
        let label = kid.map { "key '\($0)'" } ?? "\(algorithm.rawValue) key"
        if algorithm.family == .hmac {
            guard publicKey == nil, publicKeyFile == nil else {
                throw ConfigValidationError("\(label): \(algorithm.rawValue) takes 'secret' or 'secret_file', not a public key")
            }
            let bytes: [UInt8]
            switch (secret, secretFile) {
            case (let text?, nil): bytes = Array(text.utf8)
            case (nil, let path?): bytes = try Self.readSecretFile(path)
            default: throw ConfigValidationError("\(label): needs exactly one of 'secret' or 'secret_file'")
            }
            // jwt-kit asserts on short secrets (a crash in debug builds); refuse them here.
            guard bytes.count >= algorithm.minimumSecretBytes else {
                throw ConfigValidationError(
                    "\(label): an \(algorithm.rawValue) secret must be at least \(algorithm.minimumSecretBytes) bytes (it has \(bytes.count))",
                    hint: "generate one with: openssl rand -base64 \(algorithm.minimumSecretBytes)"
                )
            }
            key = .hmac(HMACKey(from: bytes))
            return
        }
        guard secret == nil, secretFile == nil else {
            throw ConfigValidationError("\(label): \(algorithm.rawValue) takes 'public_key' or 'public_key_file', not a secret")
        }
        let pem: String
        switch (publicKey, publicKeyFile) {
        case (let text?, nil): pem = text
        case (nil, let path?):
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw ConfigValidationError("\(label): cannot read public key file '\(path)'")
            }
            pem = text
        default: throw ConfigValidationError("\(label): needs exactly one of 'public_key' or 'public_key_file'")
        }
        guard pem.contains("-----BEGIN PUBLIC KEY-----") else {
            throw ConfigValidationError("\(label): expected a PEM public key (-----BEGIN PUBLIC KEY-----)", hint: "never configure a private key here")
        }
        if algorithm.family == .rsa, let parsed = try? _RSA.Signing.PublicKey(unsafePEMRepresentation: pem), parsed.keySizeInBits < 2048 {
            throw ConfigValidationError("\(label): RSA keys must have at least 2048 bits (this one has \(parsed.keySizeInBits))")
        }
        do {
            switch algorithm {
            case .rs256, .rs384, .rs512: key = .rsa(try JWTKit.Insecure.RSA.PublicKey(pem: pem))
            case .es256: key = .es256(try ES256PublicKey(pem: pem))
            case .es384: key = .es384(try ES384PublicKey(pem: pem))
            case .eddsa: key = .eddsa(try EdDSA.PublicKey(pem: pem))
            case .hs256, .hs384, .hs512: throw ConfigValidationError("unreachable")
            }
        } catch {
            throw ConfigValidationError("\(label): not a valid \(algorithm.rawValue) public key")
        }
    }

    /// A secret file's bytes without a trailing newline.
    static func readSecretFile(_ path: String) throws -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigValidationError("cannot read secret file '\(path)'")
        }
        var bytes = Array(data)
        while let last = bytes.last, last == UInt8(ascii: "\n") || last == UInt8(ascii: "\r") { bytes.removeLast() }
        return bytes
    }
}
