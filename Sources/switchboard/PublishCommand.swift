import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import NIOSSL
import SwitchboardCore

/// `switchboard publish URL TOPIC JSON [--key K] [--type T] [--id I]`
///
/// POSTs one event to a gateway's `webhook` route, the body the webhook accepts:
/// `{"topic": TOPIC, "type": T, "data": JSON, "id": I}`.
struct PublishCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "publish",
        abstract: "Publish one event through a gateway's webhook route.",
        discussion: """
            Sends {"topic": TOPIC, "type": TYPE, "data": JSON, "id": ID} to the webhook and prints \
            the gateway's answer. The key goes in the X-API-Key header (--key, or the environment \
            variable SWITCHBOARD_PUBLISH_KEY). JSON is checked before anything is sent; to publish \
            a plain string, quote it: '"hello"'.

            Exit status: 0 when the gateway answers 2xx; 1 otherwise (the status and body are printed).

            Examples:
              switchboard publish http://127.0.0.1:8080/api/publish orders:42 '{"status":"paid"}' --type order.updated
              SWITCHBOARD_PUBLISH_KEY=… switchboard publish http://127.0.0.1:8080/api/publish demo '"hi"'
            """
    )

    @Argument(help: "The webhook's full URL, e.g. http://127.0.0.1:8080/api/publish.")
    var url: String

    @Argument(help: "Topic to publish to, e.g. orders:42.")
    var topic: String

    @Argument(help: "The event's data as JSON, e.g. '{\"status\":\"paid\"}'.")
    var json: String

    @Option(help: "API key (default: the environment variable SWITCHBOARD_PUBLISH_KEY).")
    var key: String?

    @Option(name: .customLong("key-header"), help: "Header that carries the key (the webhook's key_header).")
    var keyHeader: String = "X-API-Key"

    @Option(help: "Event type (default: the webhook's default_type, 'message' unless configured).")
    var type: String?

    @Option(help: "Event id, passed on to clients.")
    var id: String?

    @Option(name: .customLong("ca-file"), help: "https: also trust the CA certificates in this PEM file.")
    var caFile: String?

    @Option(help: "Give up after this long (500ms, 5s, 1m).")
    var timeout: CommandDuration = CommandDuration(seconds: 10)

    func run() async throws {
        // Refuse bad input before any request is made.
        let data: JSONValue
        do {
            data = try JSONParser.parse(json)
        } catch {
            CommandOutput.error("publish: the data argument is not valid JSON: \(error)")
            CommandOutput.error("  (a string must be quoted, e.g. '\"hello\"'; an object looks like '{\"status\":\"paid\"}')")
            throw ExitCode(1)
        }
        let lowered = url.lowercased()
        guard lowered.hasPrefix("http://") || lowered.hasPrefix("https://") else {
            CommandOutput.error("publish: '\(url)' is not an http:// or https:// URL (the webhook's route, e.g. http://127.0.0.1:8080/api/publish)")
            throw ExitCode(1)
        }

        var event = JSONObject([("topic", .string(topic))])
        if let type { event.entries.append(("type", .string(type))) }
        event.entries.append(("data", data))
        if let id { event.entries.append(("id", .string(id))) }
        var body = ByteBuffer()
        JSONWriter.write(.object(event), into: &body)

        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        let environmentKey = ProcessInfo.processInfo.environment["SWITCHBOARD_PUBLISH_KEY"]
        let apiKey = key ?? (environmentKey?.isEmpty == false ? environmentKey : nil)
        if let apiKey { request.headers.add(name: keyHeader, value: apiKey) }
        if let caFile {
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.additionalTrustRoots = [.file(caFile)]
            request.tlsConfiguration = tls
        }
        request.body = .bytes(body)

        let status: HTTPResponseStatus
        let answer: String
        do {
            let response = try await HTTPClient.shared.execute(request, timeout: TimeAmount(timeout.duration))
            status = response.status
            let bytes = try await response.body.collect(upTo: 1 << 20)
            answer = String(buffer: bytes)
        } catch {
            CommandOutput.error("publish: cannot reach \(url): \(error)")
            throw ExitCode(1)
        }
        guard (200..<300).contains(status.code) else {
            CommandOutput.error("publish: the gateway answered HTTP \(status.code) \(status.reasonPhrase)")
            if !answer.isEmpty { CommandOutput.error(answer) }
            if apiKey == nil && (status.code == 401 || status.code == 403) {
                CommandOutput.error("  (no key was sent: pass --key or set SWITCHBOARD_PUBLISH_KEY)")
            }
            throw ExitCode(1)
        }
        CommandOutput.line(answer)
    }
}
