import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOConcurrencyHelpers
import Synchronization
import NIOCore
import SwitchboardConfig
import SwitchboardCore
import SwitchboardKernel

/// Answers every HTTP request: the routes that follow the configuration in force (endpoint
/// paths, `stats_path`s, source routes such as webhooks, the dashboard) are looked up per
/// request, so a reload can add and remove them; the fixed routes (probes, `/stats`,
/// `/metrics`, `/admin/reload`) go to Hummingbird's router.
struct GatewayResponder<Fixed: HTTPResponder>: HTTPResponder where Fixed.Context == GatewayRequestContext {
    typealias Context = GatewayRequestContext
    let fixed: Fixed
    let gateway: Gateway

    func respond(to request: Request, context: Context) async throws -> Response {
        if let response = await gateway.respondToConfiguredRoute(request, context: context) { return response }
        return try await fixed.respond(to: request, context: context)
    }
}

extension Gateway {
    /// The response of a route that the configuration in force defines, or nil.
    func respondToConfiguredRoute(_ request: Request, context: GatewayRequestContext) async -> Response? {
        let path = request.uri.path
        let (configuration, sourceRoutes) = live.withLockedValue { ($0.configuration, $0.sourceRoutes) }
        if let runtime = endpoints[path] {
            guard request.method == .get || request.method == .head else { return Self.methodNotAllowed(path, allowed: "GET") }
            return await endpointGet(request, context: context, runtime: runtime)
        }
        if let endpoint = configuration.endpoints.first(where: { $0.statsPath == path }), endpoints[endpoint.path] != nil {
            return Self.json(await endpointStats(endpoint.path), status: .ok)
        }
        let routes = sourceRoutes.values.flatMap { $0 }.filter { $0.path == path }
        if !routes.isEmpty {
            guard let route = routes.first(where: { HTTPRequest.Method($0.method) == request.method }) else {
                return Self.methodNotAllowed(path, allowed: routes.map(\.method).joined(separator: ", "))
            }
            return await serve(route, request: request, context: context)
        }
        let dashboard = configuration.dashboard
        guard dashboard.enabled, request.method == .get || request.method == .head else { return nil }
        switch path {
        case dashboard.path: return Self.asset(DashboardAssets.page, type: "text/html; charset=utf-8")
        case "/client.js": return Self.asset(DashboardAssets.client, type: "text/javascript; charset=utf-8")
        case "/endpoints.json": return Self.json(Self.endpointList(configuration), status: .ok, extraHeaders: [.cacheControl: "no-store"])
        default: return nil
        }
    }

    /// A GET on an endpoint path: Server-Sent Events when the endpoint offers them and the
    /// client asks, else an explanation.
    private func endpointGet(_ request: Request, context: GatewayRequestContext, runtime: EndpointRuntime) async -> Response {
        let transports = runtime.transports
        let path = runtime.pipeline.path
        if transports.contains(.sse) && ServerSentEvents.wantsEventStream(request) {
            if endpoints.draining.load(ordering: .relaxed) {
                return Self.json(["error": ["code": "shutting_down", "message": "the gateway is shutting down; connect again"]], status: .serviceUnavailable, extraHeaders: [.retryAfter: "1"])
            }
            return await ServerSentEvents.respond(to: request, context: context, runtime: runtime, table: endpoints, kernel: assembly.kernel, logger: logger)
        }
        if transports.contains(.sse) && !transports.contains(.websocket) {
            return Self.json(
                ["error": ["code": "not_acceptable", "message": .string("\(path) streams Server-Sent Events: send Accept: text/event-stream")]],
                status: .notAcceptable
            )
        }
        return Self.json(
            ["error": ["code": "upgrade_required", "message": .string("\(path) is a WebSocket endpoint: connect with a WebSocket client")]],
            status: .upgradeRequired
        )
    }

    /// Runs a plugin route: its `authorize` on the headers first, then the body up to its
    /// limit, then its handler.
    private func serve(_ route: HTTPRoute, request: Request, context: GatewayRequestContext) async -> Response {
        var request = request
        var routeRequest = HTTPRouteRequest(
            headers: request.headers.map { (name: $0.name.rawName, value: $0.value) },
            query: request.uri.queryParameters.map { (name: String($0.key), value: String($0.value)) },
            body: ByteBuffer(),
            remoteAddress: context.remoteAddress?.ipAddress
        )
        // The headers decide first, before a byte of the body is buffered. `Connection:
        // close` tells the client not to reuse the connection (Hummingbird discards the rest
        // of the body).
        if let refusal = route.authorize?(routeRequest) {
            return Self.response(refusal, extraHeaders: [.connection: "close"])
        }
        do {
            routeRequest.body = try await request.collectBody(upTo: route.maxBodySize)
        } catch {
            listenerRefusals.record(.bodyTooLarge)
            return Self.json(
                ["error": ["code": "body_too_large", "message": .string("request body is larger than \(route.maxBodySize) bytes")]],
                status: .contentTooLarge
            )
        }
        return Self.response(await route.handler(routeRequest))
    }

    static func methodNotAllowed(_ path: String, allowed: String) -> Response {
        json(
            ["error": ["code": "method_not_allowed", "message": .string("\(path) answers \(allowed)")]],
            status: .methodNotAllowed, extraHeaders: [.allow: allowed]
        )
    }

    static let contentTypeOptions = HTTPField.Name("X-Content-Type-Options") ?? .contentType

    static func asset(_ bytes: [UInt8], type: String) -> Response {
        Response(
            status: .ok,
            headers: [.contentType: type, .cacheControl: "no-cache", Self.contentTypeOptions: "nosniff"],
            body: .init(byteBuffer: ByteBuffer(bytes: bytes))
        )
    }

    /// `/endpoints.json`: what the dashboard (or any client) needs to connect.
    static func endpointList(_ configuration: GatewayConfiguration) -> JSONValue {
        let endpoints: [JSONValue] = configuration.endpoints.map { endpoint in
            let history: JSONValue = endpoint.history.map {
                ["size": .int(Int64($0.size)), "ttl_seconds": .int($0.ttl.nanoseconds / 1_000_000_000)]
            } ?? .null
            return [
                "path": .string(endpoint.path),
                "transports": .array(endpoint.transports.map { .string($0.rawValue) }),
                "encoders": .array(endpoint.encoders.map(JSONValue.string)),
                "compression": .string(endpoint.compression.mode.rawValue),
                "topics": .array(endpoint.topics.map { .string($0.text) }),
                "subscribe": .array(endpoint.subscribe.map { .string($0.text) }),
                "history": history,
                "filters": .array(endpoint.filters.map { .string($0.plugin) }),
            ]
        }
        return ["endpoints": .array(endpoints)]
    }
}

// MARK: fixed routes

extension Gateway {

    /// The routes that never change: probes, stats, metrics and the admin API. Endpoint
    /// paths, source routes and the dashboard follow the configuration in force
    /// (``GatewayResponder``).
    func addRoutes(to router: Router<GatewayRequestContext>) {
        router.get("/healthz") { _, _ in
            Self.json(["status": "ok"], status: .ok)
        }
        router.get("/readyz") { [self] _, _ in
            let statuses = assembly.supervisor.statuses()
            let draining = drain.hasStarted
            let ready = assembly.supervisor.isReady && !draining
            return Self.json(
                [
                    "status": .string(draining ? "draining" : ready ? "ready" : "degraded"),
                    "sources": .array(statuses.map(Self.sourceJSON)),
                ],
                status: ready ? .ok : .serviceUnavailable
            )
        }
        router.get("/stats") { [self] request, _ in
            Self.json(await statsSnapshot(detailed: Self.hasAdminKey(request.headers, adminKey: live.withLockedValue { $0.adminKey })), status: .ok)
        }
        router.get("/metrics") { [self] _, _ in
            var buffer = ByteBuffer()
            buffer.writeString(await metricsText())
            return Response(
                status: .ok,
                headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: .init(byteBuffer: buffer)
            )
        }
        router.post("/admin/reload") { [self] request, _ in
            guard let adminKey = live.withLockedValue({ $0.adminKey }) else {
                return Self.json(["error": ["code": "admin_disabled", "message": "the admin API is off: set admin_key or SWITCHBOARD_ADMIN_KEY"]], status: .notFound)
            }
            guard Self.hasAdminKey(request.headers, adminKey: adminKey) else {
                return Self.json(["error": ["code": "forbidden", "message": "send the admin key as X-Admin-Key or Authorization: Bearer"]], status: .forbidden)
            }
            let outcome = await reload(trigger: "POST /admin/reload")
            return Self.json(outcome.json, status: outcome.applied ? .ok : .unprocessableContent)
        }
    }

    /// Whether the request carries the admin key (`X-Admin-Key` or `Authorization: Bearer`,
    /// compared in constant time).
    static func hasAdminKey(_ headers: HTTPFields, adminKey: String?) -> Bool {
        guard let adminKey else { return false }
        let lookup = HTTPRouteRequest(headers: headers.map { (name: $0.name.rawName, value: $0.value) }, query: [], body: ByteBuffer(), remoteAddress: nil)
        guard let offered = lookup.header("X-Admin-Key") ?? lookup.bearerToken else { return false }
        return ConstantTime.equal(Array(offered.utf8), Array(adminKey.utf8))
    }

    /// A plugin route's response as Hummingbird's.
    static func response(_ response: HTTPRouteResponse, extraHeaders: HTTPFields = [:]) -> Response {
        var headers = extraHeaders
        for header in response.headers {
            if let name = HTTPField.Name(header.name) { headers[name] = header.value }
        }
        return json(response.body, status: .init(code: response.status), extraHeaders: headers)
    }

    static func json(_ value: JSONValue, status: HTTPResponse.Status, extraHeaders: HTTPFields = [:]) -> Response {
        var buffer = ByteBuffer()
        JSONWriter.write(value, into: &buffer)
        buffer.writeStaticString("\n")
        var headers = extraHeaders
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: .init(byteBuffer: buffer))
    }

    static func sourceJSON(_ status: SourceStatus) -> JSONValue {
        var object = JSONObject([
            ("name", .string(status.name)),
            ("plugin", .string(status.plugin)),
            ("state", .string(status.health.label)),
            ("since_ms", .int(status.since)),
            ("restarts", .int(Int64(status.restarts))),
        ])
        switch status.health {
        case .retrying(let error), .failed(let error): object["last_error"] = .string(error)
        default: break
        }
        return .object(object)
    }
}
