import Hummingbird
import HummingbirdCore
import Logging
import NIOCore

/// Hummingbird request context that also carries the peer address (for webhooks and logs).
struct GatewayRequestContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    let remoteAddress: SocketAddress?
    /// The connection, so a route that refuses a request without reading its body can
    /// close it (Hummingbird would otherwise read and discard the whole body).
    let channel: any Channel

    init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.remoteAddress = source.channel.remoteAddress
        self.channel = source.channel
    }

    /// Closes the connection shortly after the response to a request whose body was not
    /// read: time for the response to leave, then a lingering close.
    func closeAfterResponse() {
        let channel = self.channel
        channel.eventLoop.scheduleTask(in: .milliseconds(100)) { lingeringClose(channel) }
    }

    /// Largest body Hummingbird itself accepts; plugin routes set their own lower limits.
    var maxUploadSize: Int { 64 * 1024 * 1024 }
}
