import NIOConcurrencyHelpers
import SwitchboardCore
import SwitchboardKernel

/// The running sources, each in its own task under the supervisor: a reload stops and
/// starts them one by one; the rest keep running (a Redis source whose block did not
/// change keeps its connection).
final class SourceRunner: Sendable {
    let supervisor: SourceSupervisor
    private let tasks = NIOLockedValueBox<[String: Task<Void, Never>]>([:])

    init(supervisor: SourceSupervisor) {
        self.supervisor = supervisor
    }

    /// Runs `source` under the supervisor until ``stop(_:)``.
    func start(name: String, source: any EventSource) {
        let supervisor = self.supervisor
        let task = Task { await supervisor.supervise(name: name, source: source) }
        let previous = tasks.withLockedValue { tasks in
            defer { tasks[name] = task }
            return tasks[name]
        }
        previous?.cancel()
    }

    /// Cancels the source and waits until it has stopped.
    func stop(_ name: String) async {
        let task = tasks.withLockedValue { $0.removeValue(forKey: name) }
        task?.cancel()
        await task?.value
    }

    /// Stops every source and waits for them.
    func stopAll() async {
        let all = tasks.withLockedValue { tasks in
            defer { tasks = [:] }
            return Array(tasks.values)
        }
        for task in all { task.cancel() }
        for task in all { await task.value }
    }
}
