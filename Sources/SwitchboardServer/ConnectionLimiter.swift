#if canImport(Glibc)
import NIOConcurrencyHelpers
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// Counts open client sockets, overall and per IP address, and refuses past the
/// listener's limits. Each admitted socket is released exactly once, when it closes.
public final class ConnectionLimiter: Sendable {
    /// Open files kept free for sources, Redis, the cluster bus and logs when
    /// `max_connections` is derived from the process's open-file limit.
    public static let reservedFiles = 64

    /// The effective overall limit.
    public let maxConnections: Int
    /// The per-address limit; 0 = none.
    public let maxConnectionsPerIP: Int
    private let open = Atomic<Int>(0)
    private let lingering = Atomic<Int>(0)
    /// Refused sockets allowed to linger (answer out, then close) at the same time.
    public static let maximumLingering = 32
    private let perIP = NIOLockedValueBox<[String: Int]>([:])

    /// Sockets admitted past `maxConnections` that may only ask for `/healthz` (everything
    /// else gets 503): an orchestrator's liveness probe still gets an answer while the
    /// gateway is full. Taken from ``reservedFiles`` when the limit is derived.
    public static let healthHeadroom = 16

    /// What a socket may do.
    public enum Admission: Equatable {
        /// Anything.
        case admitted
        /// Only health and readiness probes (the gateway is at `maxConnections`).
        case probesOnly
        /// Nothing: too many connections overall (beyond the probe headroom).
        case tooManyConnections
        /// Nothing: too many from this address.
        case tooManyFromAddress
    }

    /// `maxConnections` 0 = derived from the open-file limit.
    public init(maxConnections: Int, maxConnectionsPerIP: Int) {
        self.maxConnections = maxConnections > 0 ? maxConnections : Self.derivedLimit()
        self.maxConnectionsPerIP = max(0, maxConnectionsPerIP)
    }

    /// The process's soft open-file limit less the files open now (event loops, logs) less
    /// ``reservedFiles`` for what opens later (Redis, the cluster bus, lingering refusals);
    /// at least 16.
    public static func derivedLimit() -> Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 - reservedFiles }
        let soft = limit.rlim_cur == rlim_t.max ? UInt64(1 << 20) : UInt64(limit.rlim_cur)
        return max(16, Int(min(soft, 1 << 24)) - openFiles() - reservedFiles - maximumLingering - healthHeadroom)
    }

    /// Files this process has open (entries of /proc/self/fd; 0 where there is none).
    static func openFiles() -> Int {
        guard let directory = opendir("/proc/self/fd") else { return 0 }
        defer { closedir(directory) }
        var count = 0
        while readdir(directory) != nil { count += 1 }
        return max(0, count - 3)  // ".", ".." and the directory's own descriptor
    }

    /// Open sockets now.
    public var openConnections: Int { open.load(ordering: .relaxed) }

    /// Admits a socket from `address` (nil when unknown), or says why not. Anything but
    /// `.tooManyConnections` and `.tooManyFromAddress` must be released once.
    public func admit(_ address: String?) -> Admission {
        let total = open.add(1, ordering: .relaxed).newValue
        if total > maxConnections + Self.healthHeadroom {
            open.subtract(1, ordering: .relaxed)
            return .tooManyConnections
        }
        let admission: Admission = total > maxConnections ? .probesOnly : .admitted
        guard maxConnectionsPerIP > 0, let address else { return admission }
        let admitted = perIP.withLockedValue { counts -> Bool in
            let current = counts[address, default: 0]
            guard current < maxConnectionsPerIP else { return false }
            counts[address] = current + 1
            return true
        }
        if !admitted {
            open.subtract(1, ordering: .relaxed)
            return .tooManyFromAddress
        }
        return admission
    }

    /// Takes a lingering slot for a refused socket; `false` when all are taken (close it now).
    public func startLingering() -> Bool {
        if lingering.add(1, ordering: .relaxed).newValue > Self.maximumLingering {
            lingering.subtract(1, ordering: .relaxed)
            return false
        }
        return true
    }

    /// Returns a lingering slot.
    public func stopLingering() {
        lingering.subtract(1, ordering: .relaxed)
    }

    /// Releases an admitted socket.
    public func release(_ address: String?) {
        open.subtract(1, ordering: .relaxed)
        guard maxConnectionsPerIP > 0, let address else { return }
        perIP.withLockedValue { counts in
            guard let current = counts[address] else { return }
            if current <= 1 { counts[address] = nil } else { counts[address] = current - 1 }
        }
    }
}
