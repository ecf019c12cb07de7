import NIOCore
import NIOHTTP1

/// Answers a request NIO's HTTP decoder cannot parse (garbage, `Content-Length` with
/// `Transfer-Encoding`, duplicate lengths, oversized headers) with `400` or `431` and
/// closes the socket, instead of leaving it open and silent.
///
/// The response is written as raw bytes through the HTTP encoder's context, so it reaches
/// the socket without passing through handlers that expect typed response parts.
final class HTTPParseErrorResponder: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    private let refusals: RefusalCounters
    private var answered = false

    init(refusals: RefusalCounters) {
        self.refusals = refusals
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let parseError = error as? HTTPParserError else {
            context.fireErrorCaught(error)
            return
        }
        guard !answered else { return }
        answered = true
        refusals.record(.badRequest)
        let tooLarge = parseError == .headerOverflow
        let response = rawResponse(
            status: tooLarge ? "431 Request Header Fields Too Large" : "400 Bad Request",
            code: tooLarge ? "header_too_large" : "bad_request",
            message: tooLarge ? "the request head is larger than the listener's max_header_size" : "the request is not valid HTTP/1.1"
        )
        let channel = context.channel
        guard let writer = try? context.pipeline.syncOperations.context(handlerType: HTTPResponseEncoder.self) else {
            context.close(promise: nil)
            return
        }
        writer.writeAndFlush(NIOAny(response)).whenComplete { _ in lingeringClose(channel) }
    }
}
