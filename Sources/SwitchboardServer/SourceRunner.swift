import NIOConcurrencyHelpers
import SwitchboardCore
import SwitchboardKernel

/// The running sources, each in its own task under the supervisor: a reload stops and
/// starts them one by one; the rest keep running (a Redis source whose block did not
/// change keeps its connection).
final class SourceRunner: Sendable {
    let supervisor: SourceSupervisor
    private let state = NIOLockedValueBox<(tasks: [String: Task<Void, Never>], stopped: Bool)>(([:], false))

    init(supervisor: SourceSupervisor) {
        self.supervisor = supervisor
    }

    /// Runs `source` under the supervisor until ``stop(_:)``. Refused (returns `false`)
    /// once ``stopAll()`` has begun: a reload that overlaps the shutdown starts nothing.
    @discardableResult
    func start(name: String, source: any EventSource) -> Bool {
        let supervisor = self.supervisor
        let (started, previous) = state.withLockedValue { state -> (Bool, Task<Void, Never>?) in
            guard !state.stopped else { return (false, nil) }
            let previous = state.tasks[name]
            state.tasks[name] = Task { await supervisor.supervise(name: name, source: source) }
            return (true, previous)
        }
        previous?.cancel()
        return started
    }

    /// Cancels the source and waits until it has stopped.
    func stop(_ name: String) async {
        let task = state.withLockedValue { $0.tasks.removeValue(forKey: name) }
        task?.cancel()
        await task?.value
    }

    /// Stops every source and waits for them; later starts are refused.
    func stopAll() async {
        let all = state.withLockedValue { state in
            defer { state.tasks = [:]; state.stopped = true }
            return Array(state.tasks.values)
        }
        for task in all { task.cancel() }
        for task in all { await task.value }
    }
}
