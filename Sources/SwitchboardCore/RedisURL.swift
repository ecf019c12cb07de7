import Foundation

/// Parsed here, in Core, so that the configuration can hold a Redis address (the cluster
/// bus's) without importing the Redis client and its NIO/TLS stack.
/// Where a Redis server is: `redis://[user[:password]@]host[:port][/db]`, or `rediss://`
/// for TLS. User and password are percent-decoded.
public struct RedisURL: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var user: String?
    public var password: String?
    public var database: Int
    public var tls: Bool
    /// PEM file of the CA to trust for `rediss://` instead of the system's (`?ca=/path`).
    public var caFile: String?

    public init(parsing text: String) throws(ConfigValidationError) {
        guard let components = URLComponents(string: text), let scheme = components.scheme?.lowercased() else {
            throw ConfigValidationError("'\(Self.redact(text))' is not a Redis URL", hint: "redis://[user:password@]host:port/db")
        }
        switch scheme {
        case "redis": tls = false
        case "rediss": tls = true
        default: throw ConfigValidationError("Redis URL scheme must be redis or rediss, not '\(scheme)'")
        }
        guard let host = components.host, !host.isEmpty else { throw ConfigValidationError("Redis URL has no host") }
        self.host = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
        port = components.port ?? 6379
        guard (1...65535).contains(port) else { throw ConfigValidationError("Redis URL port out of range") }
        user = components.percentEncodedUser.flatMap { $0.removingPercentEncoding }.flatMap { $0.isEmpty ? nil : $0 }
        password = components.percentEncodedPassword.flatMap { $0.removingPercentEncoding }
        let path = components.path.trimmingCharacters(in: CharacterSet(charactersIn: "/"))
        if path.isEmpty {
            database = 0
        } else {
            guard let number = Int(path), number >= 0 else { throw ConfigValidationError("Redis URL database must be a number, not '\(path)'") }
            database = number
        }
        for item in components.queryItems ?? [] {
            switch item.name {
            case "ca":
                guard tls, let path = item.value, !path.isEmpty else { throw ConfigValidationError("'ca' needs rediss:// and a file path") }
                caFile = path
            default:
                throw ConfigValidationError("unknown Redis URL parameter '\(item.name)'", hint: "supported: ca (rediss:// only)")
            }
        }
    }

    /// The URL with the password replaced, for logs and `/readyz`.
    public var description: String {
        let credentials = user.map { password == nil ? "\($0)@" : "\($0):***@" } ?? (password == nil ? "" : ":***@")
        return "\(tls ? "rediss" : "redis")://\(credentials)\(host.contains(":") ? "[\(host)]" : host):\(port)/\(database)" + (caFile.map { "?ca=\($0)" } ?? "")
    }

    public static func redact(_ text: String) -> String {
        guard let at = text.lastIndex(of: "@"), let scheme = text.range(of: "://") else { return text }
        return String(text[..<scheme.upperBound]) + "***" + String(text[at...])
    }
}
