// TODO: inbound state machine

/// `websocket-frames`: client frames through `WebSocketInboundStateMachine` (not written yet:
/// until it is, every input passes).
func fuzzWebSocketFrames(_ input: UnsafeRawBufferPointer) {
    _ = input
}
