import NIOConcurrencyHelpers
import Logging
import Synchronization
import SwitchboardCore

/// The health of one source as shown in `/readyz` and `/stats`.
public struct SourceStatus: Sendable, Equatable {
    public var name: String
    public var plugin: String
    public var health: SourceHealth
    /// Milliseconds since the epoch of the last state change.
    public var since: Int64
    /// How many times the source was restarted after failing.
    public var restarts: Int
}

/// Runs sources, restarts failed ones with backoff, and tracks their health.
///
/// Reconnecting is the kernel's job, not each plugin's: a source throws from `run()` when
/// it loses its backend and the supervisor tries again later, logging once per state
/// change rather than once per retry.
public final class SourceSupervisor: Sendable {
    private let states = NIOLockedValueBox<[String: SourceStatus]>([:])
    private let order = NIOLockedValueBox<[String]>([])
    private let logger: Logger
    private let backoff: Backoff

    public init(logger: Logger, backoff: Backoff = Backoff()) {
        self.logger = logger
        self.backoff = backoff
    }

    /// Declares a source so it shows up as `starting` before it runs.
    public func register(name: String, plugin: String) {
        states.withLockedValue { $0[name] = SourceStatus(name: name, plugin: plugin, health: .starting, since: UnixTime.nowMilliseconds(), restarts: 0) }
        order.withLockedValue { if !$0.contains(name) { $0.append(name) } }
    }

    /// Forgets a source (removed by a reload): it leaves `/readyz` and `/stats`.
    public func unregister(name: String) {
        states.withLockedValue { $0[name] = nil }
        order.withLockedValue { $0.removeAll { $0 == name } }
    }

    /// Records a health change; logs only when the state label changes.
    public func update(name: String, health: SourceHealth) {
        let changed: (old: SourceHealth, new: SourceHealth)? = states.withLockedValue { states in
            guard var status = states[name] else { return nil }
            let old = status.health
            guard old != health else { return nil }
            status.health = health
            if old.label != health.label { status.since = UnixTime.nowMilliseconds() }
            if case .retrying = health, case .retrying = old {} else if case .retrying = health { status.restarts += 1 }
            states[name] = status
            return old.label == health.label ? nil : (old, health)
        }
        guard let changed else { return }
        var metadata: Logger.Metadata = ["source": .string(name), "state": .string(changed.new.label)]
        switch changed.new {
        case .retrying(let error), .failed(let error):
            metadata["error"] = .string(error)
            logger.warning("source state changed", metadata: metadata)
        default:
            logger.info("source state changed", metadata: metadata)
        }
    }

    /// Current statuses in registration order.
    public func statuses() -> [SourceStatus] {
        let names = order.withLockedValue { $0 }
        return states.withLockedValue { states in names.compactMap { states[$0] } }
    }

    /// Whether every source is connected (or has finished on its own).
    public var isReady: Bool {
        statuses().allSatisfy { $0.health == .connected || $0.health == .stopped || $0.health == .standby }
    }

    /// Runs one source until the task is cancelled, restarting it with backoff when it throws.
    ///
    /// A source that ``EventSource/reportsOwnHealth`` says `connected` itself once its
    /// backend answers; other sources count as connected while they run. The backoff starts
    /// over whenever the source had been connected before it failed, so a fresh outage is
    /// retried quickly.
    public func supervise(name: String, source: any EventSource) async {
        var backoff = self.backoff
        while !Task.isCancelled {
            if !source.reportsOwnHealth { update(name: name, health: .connected) }
            let started = ContinuousClock.now
            do {
                try await source.run()
                if Task.isCancelled { break }
                update(name: name, health: .stopped)
                return
            } catch {
                if Task.isCancelled { break }
                let wasConnected = states.withLockedValue { $0[name]?.health == .connected }
                if wasConnected || ContinuousClock.now - started > .seconds(30) { backoff.reset() }
                update(name: name, health: .retrying(lastError: "\(error)"))
                let delay = backoff.nextDelay()
                do { try await Task.sleep(for: delay) } catch { break }
            }
        }
        update(name: name, health: .stopped)
    }
}
