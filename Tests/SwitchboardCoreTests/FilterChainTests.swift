import NIOConcurrencyHelpers
import SwitchboardCore
import Testing

/// The admit → attach chain on its own: order, the principal handed along, refusals, the
/// release of guards when a later filter refuses at attach time, and `recheck` on reload.
@Suite struct FilterChainTests {
    /// Records what the chain asked of it, in one log shared by the filters of a test.
    final class Log: Sendable {
        let entries = NIOLockedValueBox<[String]>([])
        func add(_ entry: String) { entries.withLockedValue { $0.append(entry) } }
        var all: [String] { entries.withLockedValue { $0 } }
    }

    final class Guard: ConnectionGuard {
        let name: String
        let log: Log
        init(name: String, log: Log) {
            self.name = name
            self.log = log
        }
        func messageReceived(now: Int64) -> MessageVerdict { .accept }
        func connectionClosed() { log.add("\(name).released") }
    }

    struct Step: Filter {
        let name: String
        let log: Log
        var admits: FilterDecision = .admit(nil)
        var rechecks: FilterDecision? = nil
        var attaches: Bool = false
        var refusesAttach: Bool = false

        func admit(_ request: UpgradeRequest, principal: Principal?) async -> FilterDecision {
            log.add("\(name).admit(\(principal?.identity ?? "-"))")
            return admits
        }

        func recheck(_ request: UpgradeRequest, principal: Principal?) async -> FilterDecision {
            log.add("\(name).recheck(\(principal?.identity ?? "-"))")
            return rechecks ?? admits
        }

        func attach(_ request: UpgradeRequest, principal: Principal?) -> FilterAttachment {
            log.add("\(name).attach(\(principal?.identity ?? "-"))")
            if refusesAttach { return .deny(status: 429, reason: "limit", retryAfter: 3) }
            return attaches ? .guarded(Guard(name: name, log: log)) : .none
        }
    }

    static let request = UpgradeRequest(path: "/ws", query: [], headers: [], remoteAddress: "127.0.0.1")

    @Test func filtersRunInOrderAndLaterOnesSeeThePrincipal() async {
        let log = Log()
        let chain = FilterChain([
            Step(name: "origin", log: log),
            Step(name: "auth", log: log, admits: .admit(Principal(identity: "alice", roles: ["ops"]))),
            Step(name: "limit", log: log, attaches: true),
        ])
        guard case .admit(let principal, let guards) = await chain.run(Self.request) else {
            Issue.record("refused")
            return
        }
        #expect(principal?.identity == "alice")
        #expect(guards.count == 1)
        #expect(log.all == ["origin.admit(-)", "auth.admit(-)", "limit.admit(alice)", "origin.attach(alice)", "auth.attach(alice)", "limit.attach(alice)"])
    }

    @Test func theFirstRefusalEndsTheRunBeforeAnyAttach() async {
        let log = Log()
        let chain = FilterChain([
            Step(name: "auth", log: log, admits: .deny(status: 401, reason: "no token", retryAfter: nil)),
            Step(name: "limit", log: log, attaches: true),
        ])
        guard case .refuse(let status, let reason, let retryAfter) = await chain.run(Self.request) else {
            Issue.record("admitted")
            return
        }
        #expect(status == 401 && reason == "no token" && retryAfter == nil)
        #expect(log.all == ["auth.admit(-)"])
    }

    @Test func aRefusalAtAttachReleasesTheGuardsAttachedBeforeIt() async {
        let log = Log()
        let chain = FilterChain([
            Step(name: "first", log: log, attaches: true),
            Step(name: "second", log: log, attaches: true),
            Step(name: "full", log: log, refusesAttach: true),
        ])
        guard case .refuse(let status, _, let retryAfter) = await chain.run(Self.request) else {
            Issue.record("admitted")
            return
        }
        #expect(status == 429 && retryAfter == 3)
        #expect(log.all.filter { $0.hasSuffix(".released") }.sorted() == ["first.released", "second.released"])
    }

    @Test func aReloadRechecksInsteadOfAdmitting() async {
        let log = Log()
        let chain = FilterChain([
            Step(name: "rate", log: log, admits: .deny(status: 429, reason: "no tokens left", retryAfter: 1), rechecks: .admit(nil)),
        ])
        guard case .admit = await chain.run(Self.request, recheck: true) else {
            Issue.record("a recheck was refused by admit's decision")
            return
        }
        guard case .refuse = await chain.run(Self.request) else {
            Issue.record("admit was not asked")
            return
        }
        #expect(log.all == ["rate.recheck(-)", "rate.attach(-)", "rate.admit(-)"])
    }

    @Test func anEmptyChainAdmitsWithNoPrincipal() async {
        guard case .admit(let principal, let guards) = await FilterChain([]).run(Self.request) else {
            Issue.record("refused")
            return
        }
        #expect(principal == nil && guards.isEmpty)
    }
}
