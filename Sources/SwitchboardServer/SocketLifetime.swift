import NIOCore
import Synchronization
import SwitchboardKernel

/// What one admitted socket undoes when it closes: its place in the connection limits,
/// its handshake timer and its arrival on the loop's shard. One box and one close-future
/// callback per socket (each callback past a future's first costs an array slot and a
/// closure context for the life of the connection); the timer and the reservation are
/// dropped as soon as they are done with, so an open connection keeps neither.
package final class SocketLifetime: Sendable {
    private struct State {
        var handshake: Scheduled<Void>?
        var arrival: ArrivalReservation?
        var closed = false
    }
    private let limiter: ConnectionLimiter
    private let address: String?
    private let state = Mutex(State())

    package init(limiter: ConnectionLimiter, address: String?) {
        self.limiter = limiter
        self.address = address
    }

    package func startHandshakeTimer(_ scheduled: Scheduled<Void>) {
        if storeUnlessClosed(\.handshake, scheduled) { scheduled.cancel() }
    }

    /// Cancelled by the upgrade, the first request or the close.
    package func cancelHandshakeTimer() {
        // Taken out under the lock, cancelled outside it (cancelling fails a promise).
        take(\.handshake)?.cancel()
    }

    /// Keeps the reservation until the handler has subscribed or the socket closes; a
    /// reservation made after the close (a filter answering late) is released at once.
    package func holdArrival(_ reservation: ArrivalReservation) {
        if storeUnlessClosed(\.arrival, reservation) { reservation.release() }
    }

    package func releaseArrival() {
        take(\.arrival)?.release()
    }

    /// Stores `value` unless the socket has closed; true when it came too late (the caller
    /// undoes it, outside the lock).
    private func storeUnlessClosed<Value: Sendable>(_ field: WritableKeyPath<State, Value?>, _ value: Value) -> Bool {
        state.withLock { state in
            if !state.closed { state[keyPath: field] = value }
            return state.closed
        }
    }

    /// Takes `field` out (it is nil afterwards).
    private func take<Value: Sendable>(_ field: WritableKeyPath<State, Value?>) -> Value? {
        state.withLock { state in
            defer { state[keyPath: field] = nil }
            return state[keyPath: field]
        }
    }

    /// The close: undoes everything once (a second call does nothing).
    package func socketClosed() {
        let undo = state.withLock { state -> (Scheduled<Void>?, ArrivalReservation?)? in
            if state.closed { return nil }
            defer { state = State(closed: true) }
            return (state.handshake, state.arrival)
        }
        guard let (handshake, arrival) = undo else { return }
        handshake?.cancel()
        arrival?.release()
        limiter.release(address)
    }
}
