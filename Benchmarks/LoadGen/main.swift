// Socket-level load generator: N WebSocket subscribers (spread over source addresses
// 127.0.0.2–127.0.0.250 to pass the ephemeral-port limit), an HTTP publisher at a fixed
// rate, publish→receive latency from a marker in each payload, loss per client, and the
// server's CPU time and RSS from /proc. Bounded in count and time; prints one JSON line.
//
//   LoadGen --ws ws://127.0.0.1:8080/bench --connections 10000 --rate 1000 --size 200 \
//           --duration 20 --publish switchboard:http://127.0.0.1:8080/api/publish \
//           --key KEY --server-pid PID
//   (--publish nchan:http://127.0.0.1:8081/pub for Nchan; see Benchmarks/bench.py)
//
// With --coordinate, several processes share one run (Benchmarks/bench.py starts them; one
// process holds at most 19,800 sockets): each connects its share of the subscribers
// (global indices from --first-index), prints a `ready` line, waits for `go` on stdin,
// publishes if it was given --publish (then prints a `published` line), waits for
// `drain <published per topic as JSON>`, drains, and prints its report with the raw
// latency histogram for the merge.
import Foundation
import NIOCore
import NIOPosix

// MARK: arguments

struct Options {
    var ws = "ws://127.0.0.1:8080/bench"
    var connections = 1000
    var rate = 0
    var size = 200
    var duration = 10.0
    var burst = 0
    var topics = 1
    var slow = 0
    var publish: String?
    var key = ""
    var serverPIDs: [Int32] = []
    var sourceAddresses = true
    var deflate = false
    var independentMessages = false
    var format = "json"
    var subscribeMessages = false
    /// Topics every client also subscribes to with a message of its own (`--extra-subscribe`).
    var extraSubscriptions: [String] = []
    /// Browser-like headers of about this many bytes in each upgrade request (User-Agent,
    /// Origin, Accept-Language and a Cookie padded to size): `--browser-headers 600`.
    var browserHeaders = 0
    /// Topics are `<prefix><n>` (scenario (h) uses its own prefix, so that its history rule
    /// does not apply to the other scenarios' topic).
    var topicPrefix = "bench:"
    var label = ""
    var connectConcurrency = 256
    var settle = 1.0
    /// HTTP keep-alive connections publishing, each with one request in flight; 0 picks
    /// enough for the rate (so a busy server's response time does not cap the offered rate).
    var publishers = 0
    /// Global index of this process's first connection (topic, slow clients and source
    /// address follow the global index, so several processes split one scenario).
    var firstIndex = 0
    var coordinate = false

    init(_ arguments: [String]) {
        var index = 1
        func next() -> String {
            index += 1
            return index < arguments.count ? arguments[index] : ""
        }
        while index < arguments.count {
            switch arguments[index] {
            case "--ws": ws = next()
            case "--connections": connections = Int(next()) ?? connections
            case "--rate": rate = Int(next()) ?? rate
            case "--size": size = Int(next()) ?? size
            case "--duration": duration = Double(next()) ?? duration
            case "--burst": burst = Int(next()) ?? burst
            case "--topics": topics = max(1, Int(next()) ?? topics)
            case "--slow": slow = Int(next()) ?? slow
            case "--publish": publish = next()
            case "--key": key = next()
            case "--server-pid": serverPIDs = next().split(separator: ",").compactMap { Int32($0) }
            case "--no-source-addresses": sourceAddresses = false
            case "--deflate": deflate = true
            case "--independent-messages": independentMessages = true
            case "--format": format = next()
            case "--subscribe-messages": subscribeMessages = true
            case "--extra-subscribe": extraSubscriptions.append(next())
            case "--browser-headers": browserHeaders = min(16000, max(0, Int(next()) ?? 0))
            case "--topic-prefix": topicPrefix = next()
            case "--label": label = next()
            case "--settle": settle = Double(next()) ?? settle
            case "--publishers": publishers = min(64, max(0, Int(next()) ?? publishers))
            case "--first-index": firstIndex = max(0, Int(next()) ?? 0)
            case "--coordinate": coordinate = true
            default: FileHandle.standardError.write(Data("unknown argument \(arguments[index])\n".utf8))
            }
            index += 1
        }
    }
}

let options = Options(CommandLine.arguments)
// Bounds: never more than one process can hold, never longer than 5 minutes.
guard options.connections <= 19_800, options.duration <= 300, options.rate <= 100_000 else {
    FileHandle.standardError.write(Data("refusing: at most 19,800 connections per process, 300 s, 100,000 events/s\n".utf8))
    exit(2)
}

// MARK: /proc

struct ProcessSample {
    var cpuSeconds: Double
    var rssBytes: Int
}

/// CPU and RSS summed over the server's processes (Nchan: master and workers).
func sample(_ pids: [Int32]) -> ProcessSample? {
    guard !pids.isEmpty else { return nil }
    var total = ProcessSample(cpuSeconds: 0, rssBytes: 0)
    for pid in pids {
        guard let one = sample(pid) else { return nil }
        total.cpuSeconds += one.cpuSeconds
        total.rssBytes += one.rssBytes
    }
    return total
}

func sample(_ pid: Int32) -> ProcessSample? {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
        let close = stat.lastIndex(of: ")")
    else { return nil }
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    // After the command: state is field 3, utime 14, stime 15 (1-based in proc(5)).
    guard fields.count > 13, let utime = Double(fields[11]), let stime = Double(fields[12]) else { return nil }
    let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
    var rss = 0
    for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        rss = (Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0) * 1024
    }
    return ProcessSample(cpuSeconds: (utime + stime) / ticks, rssBytes: rss)
}

// MARK: set-up

guard let url = URLComponents(string: options.ws), let host = url.host, let port = url.port else {
    FileHandle.standardError.write(Data("bad --ws URL\n".utf8))
    exit(2)
}
let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
let loop = group.next()
let stats = LoadStats()
let baseline = sample(options.serverPIDs)
var clients: [WebSocketLoadClient] = []

func upgradeRequest(path: String) -> String {
    var request = "GET \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    request += "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    if options.format == "msgpack" { request += "Sec-WebSocket-Protocol: switchboard.msgpack\r\n" }
    if options.deflate { request += "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" }
    if options.browserHeaders > 0 {
        var headers = "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36\r\n"
        headers += "Origin: http://\(host):\(port)\r\nAccept-Language: en-US,en;q=0.9\r\nCache-Control: no-cache\r\n"
        let cookie = "Cookie: session="
        headers += cookie + String(repeating: "c", count: max(1, options.browserHeaders - headers.utf8.count - cookie.utf8.count - 2)) + "\r\n"
        request += headers
    }
    return request + "\r\n"
}

/// `{topic}` in the WebSocket path is replaced by the client's topic number.
func path(for topic: Int) -> String {
    let base = url.path + (url.query.map { "?\($0)" } ?? "")
    return base.replacingOccurrences(of: "{topic}", with: String(topic))
}

func connect(_ index: Int) -> EventLoopFuture<Void> {
    let topic = index % options.topics
    let slow = index < options.slow
    let client = WebSocketLoadClient(stats: stats, request: upgradeRequest(path: path(for: topic)), topic: topic, independentMessages: options.independentMessages) { client in
        if slow { _ = client.channel?.setOption(.autoRead, value: false) }
        if options.subscribeMessages { client.send(#"{"type":"subscribe","data":"\#(options.topicPrefix)\#(topic)"}"#) }
        for extra in options.extraSubscriptions { client.send(#"{"type":"subscribe","data":"\#(extra)"}"#) }
    }
    clients.append(client)
    var bootstrap = ClientBootstrap(group: loop)
        .channelOption(.socketOption(.tcp_nodelay), value: 1)
        .connectTimeout(.seconds(10))
        .channelInitializer { channel in channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(client) } }
    if options.sourceAddresses, host == "127.0.0.1", let source = try? SocketAddress(ipAddress: "127.0.0.\(2 + index % 249)", port: 0) {
        bootstrap = bootstrap.bind(to: source)
    }
    return bootstrap.connect(host: host, port: port).map { _ in }
}

// Connect with bounded concurrency.
let connectStarted = NIODeadline.now()
try loop.submit {
    var next = 0
    func startNext() {
        guard next < options.connections else { return }
        let index = next
        next += 1
        connect(options.firstIndex + index).whenComplete { result in
            if case .failure = result { stats.failed += 1 }
            startNext()
        }
    }
    for _ in 0..<min(options.connectConcurrency, options.connections) { startNext() }
}.wait()
// Wait until every attempt finished (open or failed), at most 120 s.
var waited = 0.0
while waited < 120 {
    let done = try loop.submit { stats.connected + stats.failed }.wait()
    if done >= options.connections { break }
    Thread.sleep(forTimeInterval: 0.05)
    waited += 0.05
}
let connectSeconds = Double((NIODeadline.now() - connectStarted).nanoseconds) / 1e9
Thread.sleep(forTimeInterval: options.settle)  // subscriptions settle

// MARK: coordination (several processes, one run)

/// One JSON object on its own stdout line (flushed: the coordinator waits for it).
func emit(_ object: [String: Any]) {
    guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else { return }
    print(String(decoding: data, as: UTF8.self))
    fflush(stdout)
}

/// Blocks until the coordinator sends a line starting with `command` (nil: stdin closed).
func waitFor(_ command: String) -> String? {
    while let line = readLine() {
        if line.hasPrefix(command) { return String(line.dropFirst(command.count)).trimmingCharacters(in: .whitespaces) }
    }
    return nil
}

if options.coordinate {
    emit(["ready": true, "connected": try loop.submit { stats.connected }.wait()])
    guard waitFor("go") != nil else { exit(3) }
}

// MARK: publishing

/// An HTTP/1.1 keep-alive publisher: one request in flight per connection.
final class Publisher: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    var buffer = ByteBuffer()
    var busy = false
    var ok = 0
    var errors = 0
    var channel: (any Channel)?
    let onIdle: (Publisher) -> Void

    init(onIdle: @escaping (Publisher) -> Void) { self.onIdle = onIdle }

    func channelActive(context: ChannelHandlerContext) { channel = context.channel }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        buffer.writeBuffer(&incoming)
        while let end = buffer.readableBytesView.firstRange(of: Array("\r\n\r\n".utf8))?.upperBound {
            let head = String(decoding: buffer.readableBytesView[buffer.readerIndex..<end], as: UTF8.self).lowercased()
            var length = 0
            for line in head.split(separator: "\r\n") where line.hasPrefix("content-length:") {
                length = Int(line.dropFirst(15).trimmingCharacters(in: .whitespaces)) ?? 0
            }
            guard end + length <= buffer.writerIndex else { return }
            buffer.moveReaderIndex(to: end + length)
            if head.hasPrefix("http/1.1 2") { ok += 1 } else { errors += 1 }
            busy = false
            onIdle(self)
        }
        buffer.discardReadBytes()
    }

    func send(_ request: ByteBuffer) {
        busy = true
        channel?.writeAndFlush(NIOAny(request), promise: nil)
    }
}

var published = [Int](repeating: 0, count: options.topics)
var publishers: [Publisher] = []
var backlog = 0
var sequence = 0
let padding = String(repeating: "x", count: max(0, options.size - 40))

func request(topic: Int) -> ByteBuffer? {
    guard let target = options.publish, let colon = target.firstIndex(of: ":") else { return nil }
    let kind = target[..<colon]
    guard let publishURL = URLComponents(string: String(target[target.index(after: colon)...])), let publishHost = publishURL.host else { return nil }
    sequence += 1
    let marker = "~T\(NIODeadline.now().uptimeNanoseconds)|S\(sequence)|"
    let path: String
    let body: String
    var headers = ""
    if kind == "nchan" {
        path = "\(publishURL.path)/bench_\(topic)"
        body = #"{"m":"\#(marker)\#(padding)"}"#
    } else {
        path = publishURL.path
        body = #"{"topic":"\#(options.topicPrefix)\#(topic)","type":"bench","data":{"m":"\#(marker)\#(padding)"}}"#
        headers = "X-API-Key: \(options.key)\r\n"
    }
    var buffer = ByteBuffer()
    buffer.writeString("POST \(path) HTTP/1.1\r\nHost: \(publishHost)\r\nContent-Type: application/json\r\n\(headers)Content-Length: \(body.utf8.count)\r\n\r\n\(body)")
    return buffer
}

func publishOne(on publisher: Publisher) {
    let topic = sequence % options.topics
    guard let bytes = request(topic: topic) else { return }
    published[topic] += 1
    publisher.send(bytes)
}

let eventsWanted = options.burst > 0 ? options.burst : Int(Double(options.rate) * options.duration)
var issued = 0
let before = sample(options.serverPIDs)
let publishStarted = NIODeadline.now()

if let target = options.publish, eventsWanted > 0, let colon = target.firstIndex(of: ":"),
    let publishURL = URLComponents(string: String(target[target.index(after: colon)...])), let publishHost = publishURL.host,
    let publishPort = publishURL.port
{
    // One request in flight per connection: at a 25 ms response time under load, 32
    // connections still offer 1,000 events/s.
    let connections = options.publishers > 0 ? options.publishers : (options.burst > 0 ? 8 : min(32, max(4, options.rate / 30)))
    for _ in 0..<connections {
        let publisher = Publisher { idle in
            if backlog > 0 {
                backlog -= 1
                issued += 1
                publishOne(on: idle)
            }
        }
        publishers.append(publisher)
        _ = try ClientBootstrap(group: loop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(publisher) } }
            .connect(host: publishHost, port: publishPort).wait()
    }
    let publishStartedAt = NIODeadline.now()
    let ticker = loop.scheduleRepeatedTask(initialDelay: .zero, delay: .milliseconds(1)) { task in
        let due: Int
        if options.burst > 0 {
            due = eventsWanted
        } else {
            let elapsed = Double((NIODeadline.now() - publishStartedAt).nanoseconds) / 1e9
            due = min(eventsWanted, Int(elapsed * Double(options.rate)))
        }
        var owed = due - issued - backlog
        while owed > 0, let idle = publishers.first(where: { !$0.busy }) {
            issued += 1
            owed -= 1
            publishOne(on: idle)
        }
        backlog += max(0, owed)
        if issued >= eventsWanted { task.cancel() }
    }
    _ = ticker
    // Wait for publishing to finish (bounded).
    let limit = options.duration + 30
    var elapsed = 0.0
    while elapsed < limit {
        let done = try loop.submit { issued >= eventsWanted && publishers.allSatisfy { !$0.busy } }.wait()
        if done { break }
        Thread.sleep(forTimeInterval: 0.01)
        elapsed += 0.01
    }
} else if options.rate == 0 && options.burst == 0 && !options.coordinate {
    Thread.sleep(forTimeInterval: options.duration)
}
let publishSeconds = Double((NIODeadline.now() - publishStarted).nanoseconds) / 1e9
let publishReport: [String: Any] = try loop.submit {
    [
        "published": published.reduce(0, +),
        "publish_connections": publishers.count,
        "offered_events_per_second": publishSeconds > 0 ? Double(published.reduce(0, +)) / publishSeconds : 0,
        "publish_errors": publishers.reduce(0) { $0 + $1.errors },
        "publish_seconds": publishSeconds,
        "publish_started_nanos": publishStarted.uptimeNanoseconds,
    ]
}.wait()

// What each topic was sent: this process's own count, or (coordinated) the publisher's.
var publishedPerTopic = try loop.submit { published }.wait()
if options.coordinate {
    if options.publish != nil {
        var line = publishReport
        line["published_per_topic"] = publishedPerTopic
        emit(line)
    }
    guard let list = waitFor("drain"), let data = list.data(using: .utf8),
        let counts = (try? JSONSerialization.jsonObject(with: data)) as? [Int]
    else { exit(3) }
    publishedPerTopic = (0..<options.topics).map { $0 < counts.count ? counts[$0] : 0 }
}

// Drain: until no delivery for 1 s (at most 15 s).
var lastCount = -1
var quiet = 0.0
var drainWaited = 0.0
while drainWaited < 15 {
    let count = try loop.submit { stats.deliveries }.wait()
    if count == lastCount { quiet += 0.1 } else { quiet = 0 }
    lastCount = count
    if quiet >= 1.0 { break }
    Thread.sleep(forTimeInterval: 0.1)
    drainWaited += 0.1
}
let drainSeconds = max(0, drainWaited - quiet)
let after = sample(options.serverPIDs)

// MARK: report

let report: [String: Any] = try loop.submit { () -> [String: Any] in
    var expected = 0
    var lost = 0
    var clientsWithLoss = 0
    var measured = 0
    for (index, client) in clients.enumerated() where options.firstIndex + index >= options.slow {
        measured += 1
        let want = publishedPerTopic[client.topic]
        expected += want
        if client.received < want {
            lost += want - client.received
            clientsWithLoss += 1
        }
    }
    let total = stats.histogram.reduce(0, +)
    func percentile(_ p: Double) -> Double {
        guard total > 0 else { return 0 }
        let target = Int((Double(total) * p).rounded(.up))
        var seen = 0
        for (bucket, count) in stats.histogram.enumerated() {
            seen += count
            if seen >= target {
                return min(Double(LoadStats.micros(bucket: bucket)), Double(stats.maxLatencyMicros)) / 1000
            }
        }
        return Double(stats.maxLatencyMicros) / 1000
    }
    var result: [String: Any] = [
        "label": options.label,
        "connections": options.connections,
        "connected": stats.connected,
        "failed": stats.failed,
        "closed_early": stats.closed,
        "connect_seconds": connectSeconds,
        "connects_per_second": connectSeconds > 0 ? Double(stats.connected) / connectSeconds : 0,
        "last_delivery_after_first_publish_ms": stats.lastDeliveryNanos > publishStarted.uptimeNanoseconds
            ? Double(stats.lastDeliveryNanos - publishStarted.uptimeNanoseconds) / 1e6 : 0,
        "drain_seconds": drainSeconds,
        "deliveries": stats.deliveries,
        "bytes_received": stats.bytes,
        "expected": expected,
        "lost": lost,
        "clients_with_loss": clientsWithLoss,
        "measured_clients": measured,
        "latency_ms": ["p50": percentile(0.5), "p99": percentile(0.99), "p999": percentile(0.999), "max": Double(stats.maxLatencyMicros) / 1000],
    ]
    result.merge(publishReport) { mine, _ in mine }
    if options.coordinate {
        // For the coordinator's merge: the raw histogram ([bucket, count] pairs) and clocks.
        result["histogram"] = stats.histogram.enumerated().filter { $0.element > 0 }.map { [$0.offset, $0.element] }
        result["max_latency_us"] = stats.maxLatencyMicros
        result["last_delivery_nanos"] = stats.lastDeliveryNanos
    }
    if let before, let after {
        let cpu = after.cpuSeconds - before.cpuSeconds
        result["server_cpu_seconds"] = cpu
        result["deliveries_per_cpu_second"] = cpu > 0 ? Double(stats.deliveries) / cpu : 0
        result["server_rss_bytes"] = after.rssBytes
    }
    if let baseline, let after, stats.connected > 0 {
        result["server_rss_baseline_bytes"] = baseline.rssBytes
        result["rss_per_connection_bytes"] = (after.rssBytes - baseline.rssBytes) / stats.connected
    }
    return result
}.wait()
emit(report)
try? group.syncShutdownGracefully()
