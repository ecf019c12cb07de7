import NIOCore
import NIOHTTP1
import NIOWebSocket

/// NIO's WebSocket upgrader, with the frame decoder's limit chosen per connection.
///
/// `NIOTypedWebSocketServerUpgrader` takes one `maxFrameSize` for every upgrade on the port,
/// so with it the decoder would buffer a frame up to the largest `max_message_size` of all
/// endpoints before the endpoint's own, smaller limit could refuse it. The endpoint is only
/// known once `shouldUpgrade` has run; this upgrader keeps NIO's handshake (key, version,
/// `Sec-WebSocket-Accept`) and builds the codec itself afterwards, with the limit of the
/// endpoint that accepted the request.
struct EndpointWebSocketUpgrader<UpgradeResult: Sendable>: NIOTypedHTTPServerProtocolUpgrader {
    private let handshake: NIOTypedWebSocketServerUpgrader<UpgradeResult>
    private let maxFrameSize: @Sendable (any Channel) -> Int
    private let upgradePipelineHandler: @Sendable (any Channel, HTTPRequestHead) -> EventLoopFuture<UpgradeResult>

    /// - Parameters:
    ///   - shouldUpgrade: as NIO's; `nil` refuses the upgrade.
    ///   - maxFrameSize: the largest frame payload the decoder accepts on this channel, read
    ///     after `shouldUpgrade` succeeded (on the channel's loop). Clamped to 125 (every
    ///     control frame fits) … `UInt32.max`.
    ///   - upgradePipelineHandler: called after the codec is in the pipeline.
    init(
        shouldUpgrade: @escaping @Sendable (any Channel, HTTPRequestHead) -> EventLoopFuture<HTTPHeaders?>,
        maxFrameSize: @escaping @Sendable (any Channel) -> Int,
        upgradePipelineHandler: @escaping @Sendable (any Channel, HTTPRequestHead) -> EventLoopFuture<UpgradeResult>
    ) {
        self.handshake = NIOTypedWebSocketServerUpgrader(
            enableAutomaticErrorHandling: false,
            shouldUpgrade: shouldUpgrade,
            upgradePipelineHandler: { channel, _ in channel.eventLoop.makeFailedFuture(ChannelError.inappropriateOperationForState) }
        )
        self.maxFrameSize = maxFrameSize
        self.upgradePipelineHandler = upgradePipelineHandler
    }

    var supportedProtocol: String { handshake.supportedProtocol }
    var requiredUpgradeHeaders: [String] { handshake.requiredUpgradeHeaders }

    func buildUpgradeResponse(channel: any Channel, upgradeRequest: HTTPRequestHead, initialResponseHeaders: HTTPHeaders) -> EventLoopFuture<HTTPHeaders> {
        handshake.buildUpgradeResponse(channel: channel, upgradeRequest: upgradeRequest, initialResponseHeaders: initialResponseHeaders)
    }

    func upgrade(channel: any Channel, upgradeRequest: HTTPRequestHead) -> EventLoopFuture<UpgradeResult> {
        let limit = min(max(125, maxFrameSize(channel)), Int(UInt32.max))
        return channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(WebSocketFrameEncoder())
            try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: limit)))
        }.flatMap {
            upgradePipelineHandler(channel, upgradeRequest)
        }
    }
}
