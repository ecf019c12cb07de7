#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore

// Linux only (`MSG_NOSIGNAL`, the descriptor layout checked against Linux's NIO): elsewhere
// `DirectSocket.of` finds nothing and every write goes through NIO.

/// A WebSocket connection's socket written with one `send`/`sendmsg` system call per flush
/// round, below NIO's pipeline: no pipeline walk, no pending-write entry, no promise and
/// no flush bookkeeping for a write the kernel takes whole — which, for a client that
/// reads, is every write.
///
/// NIO stays the owner of the socket and the fallback. Whatever the kernel does not take
/// at once (a partial write, `EAGAIN`, an error) is handed to the channel, which then
/// buffers it, reports writability at its water marks and closes the channel on errors —
/// exactly as before, so backpressure and the slow-consumer policies are unchanged. While
/// NIO may hold bytes for the socket, every later write goes through NIO as well, so
/// order is kept; direct writes resume once NIO holds none
/// (``ChannelOptions/bufferedWritableBytes``).
///
/// Safety of the descriptor number: a direct write happens only on the channel's event
/// loop and only while `channel.isActive`. NIO closes the socket on that same loop and
/// marks the channel inactive before any user code runs again, so the number is never
/// written after NIO has closed it (when the kernel could have reused it for another
/// connection).
///
/// Used only for plain TCP listeners (TLS writes must go through NIOSSL) and only when
/// the descriptor NIO holds could be found and checked to be this connection's socket;
/// `SWITCHBOARD_DIRECT_WRITES=0` turns it off (for measuring one path against the other).
package struct DirectSocket {
    package let descriptor: CInt
    /// A write went through NIO, which may still hold some of it: direct writes wait.
    /// True at first: the first direct write checks that NIO holds nothing (the 101 response,
    /// written before this handler existed, must have left).
    private var nioMayHoldBytes = true

    private init(descriptor: CInt) {
        self.descriptor = descriptor
    }

    /// Whether direct writes are enabled for this process (`SWITCHBOARD_DIRECT_WRITES=0`: off).
    package static let enabled: Bool = {
        guard let value = getenv("SWITCHBOARD_DIRECT_WRITES") else { return true }
        return String(cString: value) != "0"
    }()

    /// The socket under `channel`, or nil when it cannot be found and verified (not a
    /// socket channel, a NIO whose layout differs, a descriptor that is not this
    /// connection's TCP socket). Call once, on the channel's loop, while it is active.
    package static func of(_ channel: any Channel) -> DirectSocket? {
        #if !os(Linux)
        return nil
        #else
        guard enabled, channel.isActive, let descriptor = descriptorByReflection(channel),
            isSocket(descriptor, local: channel.localAddress, remote: channel.remoteAddress)
        else { return nil }
        return DirectSocket(descriptor: descriptor)
        #endif
    }

    /// NIO keeps the descriptor in `BaseSocket.descriptor` behind `BaseSocketChannel.socket`;
    /// neither is public. Read by reflection, once per connection; anything unexpected
    /// gives nil (and NIO's own write path).
    private static func descriptorByReflection(_ channel: any Channel) -> CInt? {
        guard let socket = storedProperty("socket", of: channel) else { return nil }
        return storedProperty("descriptor", of: socket) as? CInt
    }

    private static func storedProperty(_ name: String, of value: Any) -> Any? {
        var mirror: Mirror? = Mirror(reflecting: value)
        while let current = mirror {
            for child in current.children where child.label == name { return child.value }
            mirror = current.superclassMirror
        }
        return nil
    }

    #if os(Linux)
    /// The descriptor is an open stream socket whose two ends are the channel's addresses.
    private static func isSocket(_ descriptor: CInt, local: SocketAddress?, remote: SocketAddress?) -> Bool {
        guard descriptor >= 0, let local, let remote else { return false }
        var type: CInt = 0
        var length = socklen_t(MemoryLayout<CInt>.size)
        guard getsockopt(descriptor, SOL_SOCKET, SO_TYPE, &type, &length) == 0, type == CInt(SOCK_STREAM.rawValue) else { return false }
        return same(remote, address { getpeername(descriptor, $0, $1) })
            && same(local, address { getsockname(descriptor, $0, $1) })
    }

    private static func address(_ call: (UnsafeMutablePointer<sockaddr>, UnsafeMutablePointer<socklen_t>) -> CInt) -> SocketAddress? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let result = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { call($0, &length) }
        }
        guard result == 0 else { return nil }
        return withUnsafeBytes(of: &storage) { raw -> SocketAddress? in
            switch CInt(raw.load(as: sa_family_t.self)) {
            case AF_INET: SocketAddress(raw.load(as: sockaddr_in.self))
            case AF_INET6: SocketAddress(raw.load(as: sockaddr_in6.self))
            default: nil
            }
        }
    }

    /// Same address and port (padding and flow labels aside).
    private static func same(_ address: SocketAddress, _ other: SocketAddress?) -> Bool {
        guard let other, address.protocol == other.protocol else { return false }
        return address.port == other.port && address.ipAddress == other.ipAddress
    }
    #endif

    /// Writes `first` and then `second` (if any) while NIO holds nothing for the socket.
    /// Returns what is left to hand to NIO, in order: nothing when the kernel took it all.
    /// Whatever is returned must be written through the channel at once, before anything
    /// else is written to it.
    package mutating func write(_ first: ByteBuffer, _ second: ByteBuffer?, channel: any Channel) -> (ByteBuffer, ByteBuffer?)? {
        guard channel.isActive, nioHoldsNothing(channel) else { return (first, second) }
        let sent = transmit(first, second)
        let total = first.readableBytes + (second?.readableBytes ?? 0)
        if sent == total { return nil }
        nioMayHoldBytes = true
        var first = first
        let fromFirst = min(sent, first.readableBytes)
        first.moveReaderIndex(forwardBy: fromFirst)
        guard var second else { return (first, nil) }
        second.moveReaderIndex(forwardBy: sent - fromFirst)
        return first.readableBytes > 0 ? (first, second) : (second, nil)
    }

    /// A write is about to go through NIO (the close frame, a connection of ours closing):
    /// direct writes wait until NIO has written it.
    package mutating func handedToNIO() {
        nioMayHoldBytes = true
    }

    /// Whether NIO must be flushed for bytes it may hold.
    package var nioNeedsFlush: Bool { nioMayHoldBytes }

    private mutating func nioHoldsNothing(_ channel: any Channel) -> Bool {
        guard nioMayHoldBytes else { return true }
        guard let buffered = try? channel.syncOptions?.getOption(.bufferedWritableBytes), buffered == 0 else { return false }
        nioMayHoldBytes = false
        return true
    }

    /// Bytes the kernel took (0 on `EAGAIN` or an error: NIO writes again and reports it).
    private func transmit(_ first: ByteBuffer, _ second: ByteBuffer?) -> Int {
        #if !os(Linux)
        return 0
        #else
        first.withUnsafeReadableBytes { a -> Int in
            guard let second, second.readableBytes > 0 else {
                return Self.retryingInterrupts { send(descriptor, a.baseAddress, a.count, CInt(MSG_NOSIGNAL)) }
            }
            return second.withUnsafeReadableBytes { b -> Int in
                var vectors = (
                    iovec(iov_base: UnsafeMutableRawPointer(mutating: a.baseAddress), iov_len: a.count),
                    iovec(iov_base: UnsafeMutableRawPointer(mutating: b.baseAddress), iov_len: b.count)
                )
                return withUnsafeMutableBytes(of: &vectors) { raw -> Int in
                    var message = msghdr()
                    message.msg_iov = raw.baseAddress?.assumingMemoryBound(to: iovec.self)
                    message.msg_iovlen = 2
                    return Self.retryingInterrupts { sendmsg(descriptor, &message, CInt(MSG_NOSIGNAL)) }
                }
            }
        }
        #endif
    }

    #if os(Linux)
    private static func retryingInterrupts(_ call: () -> Int) -> Int {
        while true {
            let result = call()
            if result >= 0 { return result }
            if errno != EINTR { return 0 }
        }
    }
    #endif
}
