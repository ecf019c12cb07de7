import Hummingbird
import HummingbirdCore
import Logging
import NIOCore

/// Hummingbird request context that also carries the peer address (for webhooks and logs).
struct GatewayRequestContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    let remoteAddress: SocketAddress?
    init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.remoteAddress = source.channel.remoteAddress
    }

    /// Largest body Hummingbird itself accepts; plugin routes set their own lower limits.
    var maxUploadSize: Int { 64 * 1024 * 1024 }
}
