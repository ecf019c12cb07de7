import Dispatch
import NIOConcurrencyHelpers
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// Gives memory back to the system after a wave of clients has left.
///
/// glibc keeps freed heap memory in its arenas for reuse: after thousands of connections
/// that held send buffers close, the process's RSS can stay gigabytes above what it uses
/// (measured: 3.7–5 GB after 2,000 SSE streams that never read had closed; 54 MB after a
/// `malloc_trim`). Every `interval` (2 s) this looks at the open sockets; when at least
/// `threshold` fewer are open than at their peak since the last trim, it calls
/// `malloc_trim(0)` off the event loops.
/// Public so that tests can drive it on an `EmbeddedEventLoop`.
public final class MemoryTrimmer: Sendable {
    private let task: RepeatedTask

    public init(
        on loop: any EventLoop, interval: TimeAmount = .seconds(2), threshold: Int = 500, openSockets: @escaping @Sendable () -> Int,
        trim: @escaping @Sendable () -> Void = MemoryTrimmer.trim
    ) {
        // Created off the loop (by the server's task), so a lock rather than a loop-bound box.
        let peak = NIOLockedValueBox(0)
        task = loop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
            let open = openSockets()
            let due = peak.withLockedValue { peak in
                peak = max(peak, open)
                guard peak - open >= threshold else { return false }
                peak = open
                return true
            }
            if due { trim() }
        }
    }

    /// glibc's `malloc_trim`, looked up at run time (`malloc.h` is not in Swift's Glibc
    /// module); nil elsewhere (musl, Darwin), where trimming is skipped.
    private static let mallocTrim: (@convention(c) (Int) -> Int32)? = {
        #if canImport(Glibc)
        guard let process = dlopen(nil, RTLD_NOW), let symbol = dlsym(process, "malloc_trim") else { return nil }
        return unsafeBitCast(symbol, to: (@convention(c) (Int) -> Int32).self)
        #else
        return nil
        #endif
    }()

    /// `malloc_trim(0)` on a background thread (no-op without glibc).
    public static func trim() {
        guard let mallocTrim = Self.mallocTrim else { return }
        DispatchQueue.global(qos: .utility).async { _ = mallocTrim(0) }
    }

    public func cancel() { task.cancel() }
}
