import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization
import SwitchboardConfig
import SwitchboardCore
import SwitchboardKernel

/// The SSE transport of an endpoint (`transports: [sse]`): `GET <path>?topic=a&topic=b` with
/// `Accept: text/event-stream`, answered with a stream of `data:` events in the JSON
/// envelope, `id:` lines carrying the positions to resume from, and heartbeat comments.
///
/// A stream is a ``Subscriber`` on its connection's event loop, like a WebSocket
/// connection: the kernel hands it the shared frames, and it sends each event's shared
/// `data:` bytes (``PreparedEvent/sseData(for:)``, built once per event) behind an `id:`
/// line of its own. The response body drains what the subscriber gathered.
///
/// The `id:` of an event is the stream's position vector, `<epoch>:<o1>,<o2>,…`: for each
/// exact topic of the request, in request order, the offset of the last event sent. A
/// browser's `EventSource` sends it back as `Last-Event-ID` when it reconnects to the same
/// URL, and every topic resumes where it stopped.
enum ServerSentEvents {
    /// The reconnect delay suggested to clients (`retry:`), in milliseconds.
    static let retryMilliseconds = 2000
    static let lastEventIDField = HTTPField.Name("Last-Event-ID")
    static let accelBufferingField = HTTPField.Name("X-Accel-Buffering")

    /// Whether a request asks for an event stream.
    static func wantsEventStream(_ request: Request) -> Bool {
        request.headers[.accept]?.lowercased().contains("text/event-stream") == true
    }

    /// The response for an SSE request on `runtime`'s endpoint: refusals as JSON errors,
    /// otherwise the stream.
    static func respond(
        to request: Request, context: GatewayRequestContext, runtime: EndpointRuntime, table: EndpointTable, kernel: Kernel, logger: Logger
    ) async -> Response {
        let pipeline = runtime.pipeline
        let query = request.uri.queryParameters.map { (name: String($0.key), value: String($0.value)) }
        let headers = request.headers.map { (name: $0.name.rawName, value: $0.value) }
        // Topics: the endpoint's default subscriptions, then `topic=` parameters in order.
        var patterns = pipeline.defaultSubscriptions
        for (name, value) in query where name == "topic" || name == "topics" {
            for text in value.split(separator: ",").map(String.init) where !text.isEmpty {
                switch ClientSession.topicPattern(text, pipeline: pipeline) {
                case .success(let pattern): if !patterns.contains(pattern) { patterns.append(pattern) }
                case .failure(let refusal): return Gateway.json(error(refusal.code, refusal.message), status: .badRequest)
                }
            }
        }
        guard !patterns.isEmpty else {
            return Gateway.json(error("no_topics", "name the topics to stream, e.g. ?topic=metrics&topic=feed:a"), status: .badRequest)
        }
        guard patterns.count <= pipeline.maxSubscriptions else {
            return Gateway.json(error("too_many_subscriptions", "at most \(pipeline.maxSubscriptions) topics per stream"), status: .badRequest)
        }
        let upgradeRequest = UpgradeRequest(path: pipeline.path, query: query, headers: headers, remoteAddress: context.remoteAddress?.ipAddress)
        let principal: Principal?
        let guards: [any ConnectionGuard]
        switch await pipeline.runFilters(upgradeRequest) {
        case .admit(let established, let attached):
            principal = established
            guards = attached
        case .refuse(let status, let reason, let retryAfter):
            runtime.rejected.add(1, ordering: .relaxed)
            var response = Gateway.json(error("denied", reason), status: HTTPResponse.Status(code: status))
            if let retryAfter { response.headers[.retryAfter] = String(retryAfter) }
            return response
        }
        for pattern in patterns where !pipeline.mayTopic(pattern, principal: principal) {
            for guardian in guards { guardian.connectionClosed() }
            runtime.forbiddenSubscriptions.add(1, ordering: .relaxed)
            return Gateway.json(error("forbidden", "subscription to '\(ClientSession.excerpt(pattern.text))' is not allowed"), status: .forbidden)
        }
        let channel = context.channel
        guard let shard = kernel.shard(for: channel.eventLoop), let variant = pipeline.encoders.first(where: { $0.encoder.name == "json" })?.variant
        else {
            for guardian in guards { guardian.connectionClosed() }
            return Gateway.json(error("unavailable", "this endpoint cannot stream events"), status: .internalServerError)
        }
        let lastEventID = lastEventIDField.flatMap { request.headers[$0] } ?? query.first { $0.name == "last_event_id" }?.value
        let (stream, continuation) = AsyncStream<ByteBuffer>.makeStream()
        let sse = SSEStream(
            runtime: runtime, shard: shard, variant: variant, patterns: patterns, principal: principal, guards: guards,
            continuation: continuation, channel: channel, logger: logger
        )
        channel.eventLoop.execute {
            sse.start(lastEventID: lastEventID.flatMap(SSEStream.PositionVector.init), lastEventIDGiven: lastEventID?.isEmpty == false)
        }
        // The socket closing ends the stream, even when nothing is being written. A drain or
        // a reload that changes the endpoint ends it too.
        runtime.open.add(OpenConnection(channel: channel, request: nil) { channel.eventLoop.execute { sse.end() } })
        // Admitted by filters a drain or reload has since replaced: end at once, so that
        // the client reconnects (`retry:`) to what is in force.
        if table.staleness(of: runtime, admittedBy: pipeline) != nil { channel.eventLoop.execute { sse.end() } }
        channel.closeFuture.whenComplete { _ in
            runtime.open.remove(channel)
            channel.eventLoop.execute { sse.end() }
        }

        var responseHeaders = HTTPFields()
        responseHeaders[.contentType] = "text/event-stream; charset=utf-8"
        responseHeaders[.cacheControl] = "no-cache"
        // Behind nginx, do not buffer the stream.
        if let accelBufferingField { responseHeaders[accelBufferingField] = "no" }
        if let origin = request.headers[.origin] {
            // The endpoint's filters (an `origin` filter, when configured) admitted this origin.
            responseHeaders[.accessControlAllowOrigin] = origin
            responseHeaders[.vary] = "Origin"
        }
        let body = ResponseBody { writer in
            defer { channel.eventLoop.execute { sse.end() } }
            var prelude = ByteBuffer()
            prelude.writeString("retry: \(retryMilliseconds)\n\n")
            try await writer.write(prelude)
            // A graceful shutdown ends the stream (the response is complete, and EventSource
            // reconnects after `retry:`); otherwise the server would wait for it forever.
            try await withGracefulShutdownHandler {
                for await chunk in stream {
                    let size = chunk.readableBytes
                    try await writer.write(chunk)
                    sse.outstandingBytes.subtract(size, ordering: .relaxed)
                }
            } onGracefulShutdown: {
                channel.eventLoop.execute { sse.end() }
            }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: responseHeaders, body: body)
    }

    static func error(_ code: String, _ message: String) -> JSONValue {
        ["error": ["code": .string(code), "message": .string(message)]]
    }
}

/// One SSE client on its loop. Every method but the atomic counter runs on the shard's loop.
final class SSEStream: Subscriber, @unchecked Sendable {
    /// `<epoch>:<o1>,<o2>,…`, the `id:` of every event with a position.
    struct PositionVector: Equatable {
        var epoch: String
        var offsets: [Int64]

        init(epoch: String, offsets: [Int64]) {
            self.epoch = epoch
            self.offsets = offsets
        }

        /// Reads a `Last-Event-ID`; nil for anything malformed (the stream then starts fresh).
        init?(_ text: String) {
            guard text.utf8.count <= 4096, let colon = text.lastIndex(of: ":"), let epoch = StreamPosition.epoch(parsing: text[..<colon])
            else { return nil }
            var offsets: [Int64] = []
            for part in text[text.index(after: colon)...].split(separator: ",", omittingEmptySubsequences: false) {
                guard let offset = StreamPosition.offset(parsing: part) else { return nil }
                offsets.append(offset)
            }
            self.init(epoch: epoch, offsets: offsets)
        }

        /// Appends `id: <epoch>:<o1>,<o2>,…\n`, without building a string per event.
        func writeIDLine(into buffer: inout ByteBuffer) {
            buffer.writeStaticString("id: ")
            buffer.writeString(epoch)
            buffer.writeStaticString(":")
            for (index, offset) in offsets.enumerated() {
                if index > 0 { buffer.writeStaticString(",") }
                JSONWriter.writeInteger(offset, into: &buffer)
            }
            buffer.writeStaticString("\n")
        }
    }

    let variant: VariantID
    var lastDeliverySequence: UInt64 = 0
    var isPendingFlush = false
    /// Bytes handed to the response body and not yet written; past the endpoint's
    /// `send_queue.max_bytes` the stream ends (the client reconnects and resumes).
    let outstandingBytes = Atomic<Int>(0)

    private let runtime: EndpointRuntime
    private let shard: LoopShard
    private let patterns: [TopicPattern]
    /// The exact topics, in request order: the positions of the `id:` vector.
    private let exactTopics: [String]
    private var vector: PositionVector
    private let principal: Principal?
    private let guards: [any ConnectionGuard]
    private let continuation: AsyncStream<ByteBuffer>.Continuation
    private let channel: any Channel
    private let logger: Logger
    /// Heartbeats in a row with bytes waiting and none written: a client that vanished
    /// without a FIN is closed after three.
    private var beatsWithoutProgress = 0
    /// What the next flush hands to the response body: small pieces copied together, large
    /// ones (an event's shared `data:` bytes) by reference, like a WebSocket connection's
    /// outbox — a slow stream holds references to frames every stream shares, not copies.
    private var gathered: ByteBuffer?
    private var pending: [ByteBuffer] = []
    /// Bytes the response body has written, for the dead-client check.
    let writtenBytes = Atomic<Int>(0)
    private var writtenAtLastBeat = 0
    /// Topics resumed from the shared store: live events up to the offset are skipped.
    private var resumeFloors: [String: StreamPosition] = [:]
    private var started = false
    private var ended = false
    private var heartbeat: RepeatedTask?
    private var expiry: Scheduled<Void>?

    init(
        runtime: EndpointRuntime, shard: LoopShard, variant: VariantID, patterns: [TopicPattern], principal: Principal?,
        guards: [any ConnectionGuard], continuation: AsyncStream<ByteBuffer>.Continuation, channel: any Channel, logger: Logger
    ) {
        self.channel = channel
        self.runtime = runtime
        self.shard = shard
        self.variant = variant
        self.patterns = patterns
        self.exactTopics = patterns.filter { !$0.isWildcard }.map(\.text)
        self.vector = PositionVector(epoch: shard.epoch, offsets: Array(repeating: 0, count: patterns.filter { !$0.isWildcard }.count))
        self.principal = principal
        self.guards = guards
        self.continuation = continuation
        self.logger = logger
    }

    /// Subscribes, and sends for each topic a `subscribed` event (as the WebSocket reply)
    /// and what its history replays: with a `Last-Event-ID` of this epoch, each exact topic
    /// resumes after its offset; otherwise retained events as usual. One loop tick, so
    /// nothing falls between the replay and live events.
    func start(lastEventID: PositionVector?, lastEventIDGiven: Bool = false, allowLoopBehind: Bool = true, pages: [String: SharedHistoryPage]? = nil) {
        guard !ended, !started else { return }
        let resume = lastEventID.flatMap { $0.offsets.count == exactTopics.count ? $0 : nil }
        // A Last-Event-ID that is not this stream's (malformed, or for other topics) cannot
        // be honoured: each topic's `subscribed` event says so (recovered: false).
        let unusable = lastEventIDGiven && resume == nil
        var replays: [(TopicPattern, HistoryReplay)] = []
        var floors: [String: StreamPosition] = [:]
        var fetches: [(topic: String, since: StreamPosition)] = []
        var exactIndex = 0
        for pattern in patterns {
            var options = SubscribeOptions()
            if !pattern.isWildcard {
                if let resume { options.since = StreamPosition(epoch: resume.epoch, offset: resume.offsets[exactIndex]) }
                if unusable { options.since = StreamPosition(epoch: "", offset: 0) }  // matches no epoch
                exactIndex += 1
            }
            var replay = shard.replay(for: pattern, options: options, allowLoopBehind: allowLoopBehind)
            if replay.loopIsBehind {
                // The client saw an event this loop has not delivered yet: look again after
                // the loop's queued deliveries.
                shard.eventLoop.execute { self.start(lastEventID: lastEventID, lastEventIDGiven: lastEventIDGiven, allowLoopBehind: false, pages: pages) }
                return
            }
            if replay.needsFetch, let since = options.since {
                guard let pages else {
                    fetches.append((pattern.text, since))
                    continue
                }
                let resumed = shard.resume(pattern.text, since: since, page: pages[pattern.text])
                replay = resumed.replay
                if let floor = resumed.floor, let epoch = replay.history?.position?.epoch { floors[pattern.text] = StreamPosition(epoch: epoch, offset: floor) }
            }
            replays.append((pattern, replay))
        }
        if !fetches.isEmpty, let store = shard.sharedHistoryStore {
            // Memory does not reach back: read the shared store off the loop, then start.
            let limits = fetches.map { shard.historySize(of: $0.topic) }  // on the loop
            shard.eventLoop.makeFutureWithTask { () async -> [String: SharedHistoryPage] in
                var pages: [String: SharedHistoryPage] = [:]
                for (fetch, limit) in zip(fetches, limits) {
                    pages[fetch.topic] = try? await store.events(of: fetch.topic, after: fetch.since.offset, limit: limit)
                }
                return pages
            }.whenSuccess { pages in self.start(lastEventID: lastEventID, lastEventIDGiven: lastEventIDGiven, allowLoopBehind: false, pages: pages) }
            return
        }
        started = true
        runtime.connections.add(1, ordering: .relaxed)
        runtime.accepted.add(1, ordering: .relaxed)
        // Each exact topic's place: where its replay starts (the replayed events then move it
        // forward), or, with nothing to replay, its position now — so an `id:` never claims
        // a topic is further than the events sent before it, and a reconnect never resumes a
        // quiet topic from before it was joined.
        var index = 0
        for (pattern, replay) in replays where !pattern.isWildcard {
            if let position = replay.history?.position {
                if position.epoch != vector.epoch { vector = PositionVector(epoch: position.epoch, offsets: vector.offsets.map { _ in 0 }) }
                let resumedFrom = replay.history?.recovered == true ? resume?.offsets[index] : nil
                vector.offsets[index] = resumedFrom ?? position.offset
            }
            index += 1
        }
        for (pattern, replay) in replays {
            _ = shard.subscribe(pattern, self)
            var reply = ByteBuffer()
            reply.writeStaticString("event: subscribed\ndata: ")
            JSONWriter.write(ServerReply.subscribed(pattern.text, replay.history).envelope(timestamp: UnixTime.nowSeconds()), into: &reply)
            reply.writeStaticString("\n\n")
            append(reply)
            shard.send(replay.events, to: self)
        }
        // After the replays, which the floors would otherwise filter.
        resumeFloors = floors
        shard.needsFlush(self)
        let interval = runtime.pipeline.heartbeatInterval
        if interval > .zero {
            heartbeat = shard.eventLoop.scheduleRepeatedTask(initialDelay: TimeAmount(interval), delay: TimeAmount(interval)) { [self] _ in
                // Progress is what the body wrote since the last beat; a stream with nothing
                // waiting is idle, not dead.
                let written = writtenBytes.load(ordering: .relaxed)
                let waiting = outstandingBytes.load(ordering: .relaxed) > 0
                beatsWithoutProgress = waiting && written == writtenAtLastBeat ? beatsWithoutProgress + 1 : 0
                writtenAtLastBeat = written
                if beatsWithoutProgress >= 3 {
                    // Nothing written for three intervals: the client is gone (or frozen).
                    runtime.refusals.record(.deadPeer)
                    end()
                    channel.close(promise: nil)
                    return
                }
                append(ByteBuffer(staticString: ": keep-alive\n\n"))
                shard.needsFlush(self)
            }
        }
        if let delay = ClientSession(principal: principal).expiryDelay(nowMilliseconds: UnixTime.nowMilliseconds()) {
            expiry = shard.eventLoop.scheduleTask(in: .milliseconds(delay)) { [self] in
                append(ByteBuffer(staticString: "event: error\ndata: {\"type\":\"error\",\"data\":{\"code\":\"token_expired\",\"message\":\"token expired\"}}\n\n"))
                _ = flush()
                end()
            }
        }
    }

    func enqueue(_ frame: ByteBuffer, of event: PreparedEvent) -> Bool {
        guard !ended else { return false }
        if !resumeFloors.isEmpty, let position = event.event.position, let floor = resumeFloors[event.event.topic] {
            if position.epoch == floor.epoch && position.offset <= floor.offset { return true }  // in the replay from the shared store
            resumeFloors[event.event.topic] = nil
        }
        if let position = event.event.position, let index = exactTopics.firstIndex(of: event.event.topic) {
            if position.epoch != vector.epoch {
                // History was lost and restarted: the other topics' offsets mean nothing now.
                vector = PositionVector(epoch: position.epoch, offsets: vector.offsets.map { _ in 0 })
            }
            vector.offsets[index] = position.offset
            // Straight into the gathered bytes: no buffer per event and stream.
            var small = gathered.take() ?? ByteBuffer()
            vector.writeIDLine(into: &small)
            gathered = small
        }
        append(event.sseData(for: variant))
        return true
    }

    private func append(_ bytes: ByteBuffer) {
        if bytes.readableBytes > OutboundStateMachine.gatherLimit {
            if let small = gathered { pending.append(small) }
            gathered = nil
            pending.append(bytes)
            return
        }
        if gathered == nil { gathered = ByteBuffer() }
        gathered?.writeImmutableBuffer(bytes)
    }

    @discardableResult
    func flush() -> Bool {
        guard !ended else { return false }
        if let small = gathered { pending.append(small) }
        gathered = nil
        guard !pending.isEmpty else { return false }
        let pieces = pending
        pending = []
        let size = pieces.reduce(0) { $0 + $1.readableBytes }
        let outstanding = outstandingBytes.load(ordering: .relaxed)
        // One flush always goes when nothing is waiting (a large replay must not loop).
        if outstanding > 0 && outstanding + size > runtime.pipeline.sendQueue.maxBytes {
            // The client reads too slowly: end the stream; EventSource reconnects with its
            // Last-Event-ID and resumes from history.
            runtime.refusals.record(.slowConsumerDisconnect)
            logger.debug("slow SSE consumer: ending the stream")
            end()
            channel.close(promise: nil)
            return false
        }
        outstandingBytes.add(size, ordering: .relaxed)
        for piece in pieces { continuation.yield(piece) }
        return true
    }

    /// Ends the stream (client gone, slow, token expired, shutdown): unsubscribes and
    /// releases the filters' reservations. Idempotent.
    func end() {
        guard !ended else { return }
        ended = true
        heartbeat?.cancel()
        expiry?.cancel()
        gathered = nil
        pending = []
        if started {
            runtime.connections.add(-1, ordering: .relaxed)
            for pattern in patterns { shard.unsubscribe(pattern, self) }
        }
        for guardian in guards { guardian.connectionClosed() }
        continuation.finish()
    }
}
