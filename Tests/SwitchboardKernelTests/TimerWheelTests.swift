import NIOCore
import NIOEmbedded
import SwitchboardKernel
import Testing

/// The per-loop timer wheel behind connection heartbeats, on an embedded loop's virtual
/// clock: deadlines fire at most one resolution late and never early within the span,
/// cancelling is exact, a callback may schedule again or cancel a neighbour.
@Suite struct TimerWheelTests {
    final class Client: WheelTimed {
        var wheelSlot = WheelSlot.none
        var fired: [Int64] = []
        let loop: EmbeddedEventLoop
        var onFire: ((Client) -> Void)?
        init(loop: EmbeddedEventLoop) { self.loop = loop }
        func wheelDeadlinePassed() {
            fired.append(Int64(loop.now.uptimeNanoseconds))
            onFire?(self)
        }
    }

    static let ms: Int64 = 1_000_000

    @Test func deadlinesFireInOrderWithinOneResolution() {
        let loop = EmbeddedEventLoop()
        let wheel = TimerWheel(eventLoop: loop)
        let start = Int64(loop.now.uptimeNanoseconds)
        let clients = (0..<3).map { _ in Client(loop: loop) }
        wheel.schedule(clients[0], at: start + 150 * Self.ms)
        wheel.schedule(clients[1], at: start + 350 * Self.ms)
        wheel.schedule(clients[2], at: start + 10_000 * Self.ms)
        #expect(wheel.count == 3)
        loop.advanceTime(by: .milliseconds(140))
        #expect(clients[0].fired.isEmpty)
        loop.advanceTime(by: .milliseconds(110))
        #expect(clients[0].fired.count == 1 && clients[1].fired.isEmpty)
        loop.advanceTime(by: .milliseconds(250))
        #expect(clients[1].fired.count == 1)
        for (client, deadline) in zip(clients.prefix(2), [150, 350]) {
            let late = (client.fired[0] - start) / Self.ms - Int64(deadline)
            #expect(late >= 0 && late <= 100, "fired \(late) ms after its deadline")
        }
        wheel.cancel(clients[2])
        #expect(wheel.count == 0 && clients[2].wheelSlot == .none)
        loop.advanceTime(by: .seconds(11))
        #expect(clients[2].fired.isEmpty)
    }

    @Test func schedulingAgainReplacesTheDeadlineAndCancelKeepsOthers() {
        let loop = EmbeddedEventLoop()
        let wheel = TimerWheel(eventLoop: loop)
        let start = Int64(loop.now.uptimeNanoseconds)
        let clients = (0..<50).map { _ in Client(loop: loop) }
        for client in clients { wheel.schedule(client, at: start + 200 * Self.ms) }
        // Cancel every other one (swap-removal moves the others inside the bucket).
        for client in clients.enumerated() where client.offset % 2 == 0 { wheel.cancel(client.element) }
        wheel.schedule(clients[1], at: start + 1_000 * Self.ms)
        #expect(wheel.count == 25)
        loop.advanceTime(by: .milliseconds(400))
        #expect(clients.enumerated().filter { !$0.element.fired.isEmpty }.map(\.offset) == Array(stride(from: 3, to: 50, by: 2)))
        loop.advanceTime(by: .milliseconds(800))
        #expect(clients[1].fired.count == 1 && wheel.count == 0)
    }

    @Test func aCallbackMayScheduleAgainOrCancelANeighbour() {
        let loop = EmbeddedEventLoop()
        let wheel = TimerWheel(eventLoop: loop)
        let start = Int64(loop.now.uptimeNanoseconds)
        let repeating = Client(loop: loop)
        repeating.onFire = { client in
            if client.fired.count < 3 { wheel.schedule(client, at: Int64(loop.now.uptimeNanoseconds) + 100 * Self.ms) }
        }
        let first = Client(loop: loop)
        let second = Client(loop: loop)
        first.onFire = { _ in wheel.cancel(second) }
        wheel.schedule(repeating, at: start)
        wheel.schedule(first, at: start + 500 * Self.ms)
        wheel.schedule(second, at: start + 500 * Self.ms)
        loop.advanceTime(by: .seconds(2))
        #expect(repeating.fired.count == 3)
        // Both were due in the same bucket: the cancel is a no-op and nothing is corrupted.
        #expect(first.fired.count == 1 && second.fired.count == 1)
        #expect(wheel.count == 0)
    }

    @Test func aDeadlineBeyondTheSpanFiresEarlyAndCanBeScheduledAgain() {
        let loop = EmbeddedEventLoop()
        let wheel = TimerWheel(eventLoop: loop)
        let start = Int64(loop.now.uptimeNanoseconds)
        let far = Client(loop: loop)
        let deadline = start + 300_000 * Self.ms
        far.onFire = { client in
            let now = Int64(loop.now.uptimeNanoseconds)
            if now < deadline { wheel.schedule(client, at: deadline) }
        }
        wheel.schedule(far, at: deadline)
        loop.advanceTime(by: .seconds(299))
        #expect(wheel.count == 1)
        loop.advanceTime(by: .seconds(2))
        #expect(far.fired.last.map { $0 >= deadline } == true)
        #expect(wheel.count == 0)
    }
}
