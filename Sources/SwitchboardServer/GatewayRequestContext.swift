import Hummingbird
import HummingbirdCore
import Logging
import NIOCore

/// Hummingbird request context that also carries the peer address (for webhooks and logs).
struct GatewayRequestContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    let remoteAddress: SocketAddress?
    /// The connection's channel: SSE streams live on its event loop and end when it closes.
    let channel: any Channel
    init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.remoteAddress = source.channel.remoteAddress
        self.channel = source.channel
    }

    /// Largest body Hummingbird itself accepts; plugin routes set their own lower limits.
    var maxUploadSize: Int { 64 * 1024 * 1024 }
}
