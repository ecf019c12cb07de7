// Fan-out micro-benchmark: drives the kernel's encode-once fan-out with no-op subscribers
// (no sockets), so the numbers are the kernel's own cost per delivery. Prints one JSON line.
//
//   swift run -c release FanOutBenchmark                 # 10,000 subscribers × 2,000 events
//   swift run -c release FanOutBenchmark --smoke         # quick run for CI (checks, no timing claims)
//   swift run -c release FanOutBenchmark --subscribers 1000 --events 10000 --variants 2
import Foundation
import JSONPlugin
import NIOCore
import NIOPosix
import SwitchboardCore
import SwitchboardKernel
import Synchronization

/// A subscriber that gathers frames like a connection does (copied into one buffer per
/// flush) and then drops them instead of writing to a socket.
final class CountingSink: Subscriber, @unchecked Sendable {
    let variant: VariantID
    var lastDeliverySequence: UInt64 = 0
    var isPendingFlush = false
    var frames = 0
    var bytes = 0
    var flushes = 0
    private var outbox: ByteBuffer?

    init(variant: VariantID) { self.variant = variant }

    func enqueue(_ frame: ByteBuffer, of event: PreparedEvent) -> Bool {
        frames += 1
        bytes += frame.readableBytes
        if outbox == nil { outbox = ByteBufferAllocator().buffer(capacity: max(512, frame.readableBytes)) }
        outbox?.writeImmutableBuffer(frame)
        return true
    }

    func flush() -> Bool {
        flushes += 1
        outbox = nil
        return true
    }
}

func argument(_ name: String, default value: Int) -> Int {
    let arguments = CommandLine.arguments
    guard let index = arguments.firstIndex(of: name), index + 1 < arguments.count, let parsed = Int(arguments[index + 1]) else { return value }
    return parsed
}

let smoke = CommandLine.arguments.contains("--smoke")
let subscriberCount = argument("--subscribers", default: smoke ? 1_000 : 10_000)
let eventCount = argument("--events", default: smoke ? 200 : 2_000)
let variantCount = max(1, min(2, argument("--variants", default: 1)))
let threads = argument("--threads", default: System.coreCount)

let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
let profile = CompressionProfile(level: 6, memLevel: 8, minSize: 0)
let table = VariantTable(encoders: [JSONEventEncoder()], compressionProfiles: variantCount > 1 ? [profile] : [])
let variants = [table.variant(forEncoder: "json"), table.variant(forEncoder: "json", profile: profile, windowBits: 15)].compactMap { $0 }
let kernel = Kernel(eventLoopGroup: group, variants: table)

var sinks: [(CountingSink, LoopShard)] = []
for index in 0..<subscriberCount {
    let shard = kernel.shards[index % kernel.shards.count]
    let sink = CountingSink(variant: variants[index % variantCount])
    _ = try await shard.eventLoop.submit { shard.subscribe(TopicPattern("bench")!, sink) }.get()
    sinks.append((sink, shard))
}

let payload = JSONValue.string(String(repeating: "x", count: 150))
let started = DispatchTime.now().uptimeNanoseconds
for sequence in 0..<eventCount {
    kernel.publish(Event(topic: "bench", type: "tick", data: ["seq": .int(Int64(sequence)), "payload": payload]))
}
// Drain: every loop runs everything queued so far (deliveries, then flushes).
for _ in 0..<3 {
    for shard in kernel.shards { try await shard.eventLoop.submit {}.get() }
}
let elapsed = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9

var frames = 0
var flushes = 0
for (sink, shard) in sinks {
    let (f, fl) = try await shard.eventLoop.submit { (sink.frames, sink.flushes) }.get()
    frames += f
    flushes += fl
}
let expected = subscriberCount * eventCount
let encodes = kernel.counters.encodes.load(ordering: .relaxed)
let builds = kernel.counters.frameBuilds.load(ordering: .relaxed)
let result: JSONValue = [
    "benchmark": "fanout",
    "subscribers": .int(Int64(subscriberCount)),
    "events": .int(Int64(eventCount)),
    "variants": .int(Int64(variantCount)),
    "threads": .int(Int64(threads)),
    "deliveries": .int(Int64(frames)),
    "expected_deliveries": .int(Int64(expected)),
    "encodes": .int(Int64(encodes)),
    "frame_builds": .int(Int64(builds)),
    "flushes": .int(Int64(flushes)),
    "seconds": .double((elapsed * 1000).rounded() / 1000),
    "deliveries_per_second": .int(Int64(Double(frames) / max(elapsed, 1e-9))),
]
print(JSONWriter.string(result))
try await group.shutdownGracefully()
// The smoke check asserts what must hold regardless of speed: no loss, encode once per event.
guard frames == expected, encodes == eventCount, builds == eventCount * variantCount else {
    FileHandle.standardError.write(Data("fanout: expected \(expected) deliveries, \(eventCount) encodes and \(eventCount * variantCount) frames\n".utf8))
    exit(1)
}
