import APIKeyPlugin
import Foundation
import Logging
import SwitchboardConfig
import SwitchboardCore
import Testing

@Suite struct APIKeyFilterTests {
    static let viewerKey = "viewer-key-0123456789abcdef"
    static let adminKey = "admin-key-0123456789abcdef"
    // printf %s admin-key-0123456789abcdef | sha256sum
    static let adminSHA256 = "1b3af7d2f1f3428ee7d76d5be730b93565efcf2ecbb7819caf9002bca23d4545"

    static func yaml(extra: String = "") -> String {
        """
        keys:
          - name: viewer
            key: \(viewerKey)
            roles: [viewer]
            topics: ["metrics", "topic:*"]
          - name: admin
            sha256: \(adminSHA256)
            roles: [admin]
        \(extra)
        """
    }

    func filter(_ yaml: String) async throws -> any Filter {
        let config = try ConfigurationLoader.decodePluginConfig(APIKeyFilter.Config.self, yaml: yaml, plugin: "api_key")
        return try await APIKeyFilter.build(config: config, context: FilterContext(endpointPath: "/ws", logger: Logger(label: "test")))
    }

    func decide(_ filter: any Filter, headers: [(name: String, value: String)] = [], query: [(name: String, value: String)] = []) async -> FilterDecision {
        await filter.admit(UpgradeRequest(path: "/ws", query: query, headers: headers, remoteAddress: "127.0.0.1"), principal: nil)
    }

    @Test func theHashInTheTestIsTheKeysDigest() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/sha256sum")
        let input = Pipe(), output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        try process.run()
        input.fileHandleForWriting.write(Data(Self.adminKey.utf8))
        try input.fileHandleForWriting.close()
        process.waitUntilExit()
        let digest = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).prefix(64)
        #expect(String(digest) == Self.adminSHA256)
    }

    @Test func admitsWithPrincipalFromHeaderBearerAndQuery() async throws {
        let filter = try await filter(Self.yaml(extra: "query: api_key"))
        let viewer = Principal(identity: "viewer", roles: ["viewer"], topics: [TopicPattern("metrics")!, TopicPattern("topic:*")!])
        #expect(await decide(filter, headers: [("X-API-Key", Self.viewerKey)]) == .admit(viewer))
        #expect(await decide(filter, headers: [("Authorization", "Bearer \(Self.adminKey)")]) == .admit(Principal(identity: "admin", roles: ["admin"])))
        #expect(await decide(filter, query: [("api_key", Self.viewerKey)]) == .admit(viewer))
    }

    @Test(arguments: [
        ([], "missing API key"),
        ([("X-API-Key", "")], "missing API key"),
        ([("X-API-Key", "viewer-key-0123456789abcdeF")], "invalid API key"),
        ([("X-API-Key", "viewer-key-0123456789abcde")], "invalid API key"),
        ([("X-API-Key", APIKeyFilterTests.adminSHA256)], "invalid API key"),  // the hash is not the key
        ([("Authorization", "Basic dmlld2VyOmtleQ==")], "missing API key"),
    ] as [([(String, String)], String)])
    func refuses(headers: [(String, String)], reason: String) async throws {
        let filter = try await filter(Self.yaml())
        #expect(await decide(filter, headers: headers.map { (name: $0.0, value: $0.1) }) == .deny(status: 401, reason: reason, retryAfter: nil))
    }

    @Test func queryIsOffUnlessConfigured() async throws {
        let filter = try await filter(Self.yaml())
        #expect(await decide(filter, query: [("api_key", Self.viewerKey)]) == .deny(status: 401, reason: "missing API key", retryAfter: nil))
    }

    @Test func observeModeAdmitsWithoutPrincipal() async throws {
        let filter = try await filter(Self.yaml(extra: "mode: observe"))
        #expect(await decide(filter) == .admit(nil))
    }

    @Test func keysFromAFile() async throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("keys-\(UUID().uuidString).txt")
        try """
            # name  secret  roles  topics
            ops sha256:\(Self.adminSHA256) roles=admin,ops topics=cluster:*
            feed key:feed-key-0123456789abcdef
            """.write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        let filter = try await filter("file: \(file.path)")
        #expect(await decide(filter, headers: [("X-API-Key", Self.adminKey)]) == .admit(Principal(identity: "ops", roles: ["admin", "ops"], topics: [TopicPattern("cluster:*")!])))
        #expect(await decide(filter, headers: [("X-API-Key", "feed-key-0123456789abcdef")]) == .admit(Principal(identity: "feed")))
    }

    @Test(arguments: [
        "keys: []",
        "keys:\n  - name: a\n    key: short",
        "keys:\n  - name: a\n    sha256: abc",
        "keys:\n  - name: a",
        "keys:\n  - name: a\n    key: 0123456789abcdef0123\n    sha256: \(APIKeyFilterTests.adminSHA256)",
        "keys:\n  - name: a\n    key: 0123456789abcdef0123\n  - name: a\n    key: 0123456789abcdef0124",
        "file: /nonexistent/keys.txt",
    ])
    func configErrors(yaml: String) {
        #expect(throws: ConfigurationError.self) {
            try ConfigurationLoader.decodePluginConfig(APIKeyFilter.Config.self, yaml: yaml, plugin: "api_key")
        }
    }

    @Test func errorsNeverContainTheKey() async throws {
        do {
            _ = try ConfigurationLoader.decodePluginConfig(APIKeyFilter.Config.self, yaml: "keys:\n  - name: a\n    key: secret-short", plugin: "api_key")
            Issue.record("expected an error")
        } catch {
            #expect(!error.description.contains("secret-short"))
        }
        let filter = try await filter(Self.yaml())
        guard case .deny(_, let reason, _) = await decide(filter, headers: [("X-API-Key", "guess-\(Self.viewerKey)")]) else {
            Issue.record("expected a denial")
            return
        }
        #expect(!reason.contains(Self.viewerKey))
    }
}
