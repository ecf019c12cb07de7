import Logging
import NIOConcurrencyHelpers
import Synchronization
import NIOSSL
import SwitchboardCluster
import SwitchboardConfig
import SwitchboardCore
import SwitchboardKernel

extension Gateway {
    /// What a reload did, for the log, `POST /admin/reload` and tests.
    public struct ReloadOutcome: Sendable {
        /// Whether the new configuration is now in force.
        public var applied: Bool
        /// One line per change applied.
        public var changes: [String]
        /// Why nothing was applied (every configuration error, or what needs a restart).
        public var errors: [String]

        var json: JSONValue {
            [
                "status": .string(applied ? "applied" : "rejected"),
                "changes": .array(changes.map(JSONValue.string)),
                "errors": .array(errors.map(JSONValue.string)),
            ]
        }
    }

    private enum EndpointChange {
        case added(EndpointPipeline, EndpointConfiguration)
        /// Only `filters` changed: open connections are run through the new chain.
        case filtersChanged(EndpointPipeline, EndpointConfiguration)
        /// Other settings changed: open connections are closed (1001) over the drain window.
        case changed(EndpointPipeline, EndpointConfiguration)
    }

    /// Reads the configuration again and applies it, or keeps the one in force.
    ///
    /// All or nothing: the new file must be valid, must not change what only a restart can
    /// (the listener's address and limits, the cluster, the kernel's wire variants, history
    /// and flush interval), and every new or changed plugin must build — or nothing changes
    /// and every reason is logged and returned. Then new endpoints and sources start, removed
    /// ones stop (their clients get 1001), an endpoint whose filters changed runs each open
    /// connection through the new chain (refused: 1008 with the reason), one whose other
    /// settings changed closes its connections with 1001 spread over `shutdown.drain`, and
    /// everything unchanged is left alone: its connections stay open and lose no event, its
    /// sources keep their backend connections.
    public func reload(trigger: String) async -> ReloadOutcome {
        guard reloads.running.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged else {
            return rejected(["a reload is already running"], trigger: trigger)
        }
        defer { reloads.running.store(false, ordering: .relaxed) }
        guard let reloadSource else {
            return rejected(["the gateway runs the built-in configuration: there is no file to read again"], trigger: trigger)
        }
        guard !drain.hasStarted else { return rejected(["the gateway is shutting down"], trigger: trigger) }
        let new: GatewayConfiguration
        do {
            new = try reloadSource()
        } catch {
            return rejected(error.diagnostics.map(\.description), trigger: trigger)
        }
        let old = configuration
        let restart = Self.restartRequirements(old: old, new: new) + assembly.restartRequirements(for: new, running: old)
        guard restart.isEmpty else {
            return rejected(restart.map { "\($0): takes effect only after a restart" }, trigger: trigger)
        }

        // Build everything new first: a plugin that refuses leaves the old configuration in force.
        var tlsContext: NIOSSLContext?
        if let files = new.listener.tls {
            do { tlsContext = try TLSContextBox.makeContext(files) } catch { return rejected(["\(error)"], trigger: trigger) }
        }
        let oldEndpoints = Dictionary(old.endpoints.map { ($0.path, $0) }, uniquingKeysWith: { first, _ in first })
        var endpointChanges: [String: EndpointChange] = [:]
        var errors: [String] = []
        for endpoint in new.endpoints {
            let previous = oldEndpoints[endpoint.path]
            if previous?.fingerprint == endpoint.fingerprint { continue }
            do {
                let pipeline = try await GatewayAssembly.makePipeline(endpoint, variants: assembly.kernel.variants, shutdownGrace: new.shutdownGrace, logger: logger)
                if previous == nil {
                    endpointChanges[endpoint.path] = .added(pipeline, endpoint)
                } else if previous?.fingerprintWithoutFilters == endpoint.fingerprintWithoutFilters {
                    endpointChanges[endpoint.path] = .filtersChanged(pipeline, endpoint)
                } else {
                    endpointChanges[endpoint.path] = .changed(pipeline, endpoint)
                }
            } catch {
                errors.append("endpoint \(endpoint.path): \(error)")
            }
        }
        let oldSources = Dictionary(old.sources.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        var builtSources: [(configuration: SourceConfiguration, source: any EventSource, routes: [HTTPRoute])] = []
        for source in new.sources where oldSources[source.name]?.fingerprint != source.fingerprint {
            do {
                let built = try await assembly.sourceFactory.build(source, register: false)
                builtSources.append((source, built.source, built.routes))
            } catch {
                errors.append("\(error)")
            }
        }
        var routes = live.withLockedValue { $0.sourceRoutes }.filter { name, _ in new.sources.contains { $0.name == name } }
        for built in builtSources { routes[built.configuration.name] = built.routes }
        errors += new.routeConflicts(routes)
        guard errors.isEmpty else { return rejected(errors, trigger: trigger) }

        // Apply.
        var changes: [String] = []
        if let tlsContext, let files = new.listener.tls, let tls {
            tls.install(tlsContext, files: files)
            changes.append("listener.tls: certificate and key read again")
        }
        let removedPaths = old.endpoints.map(\.path).filter { path in !new.endpoints.contains { $0.path == path } }
        var table = endpoints.all
        let drainSettings = new.shutdown
        // Removed endpoints leave the table before their connections are listed: an upgrade
        // that joins one afterwards finds it gone (`EndpointTable.staleness`).
        let removed = removedPaths.compactMap { path in table.removeValue(forKey: path).map { (path, $0) } }
        var recheck: [(EndpointRuntime, EndpointPipeline)] = []
        for (path, change) in endpointChanges.sorted(by: { $0.key < $1.key }) {
            switch change {
            case .added(let pipeline, let endpoint):
                let runtime = EndpointRuntime(pipeline: pipeline, transports: Set(endpoint.transports), logger: logger)
                runtime.drainIsPaced.store(true, ordering: .relaxed)
                table[path] = runtime
                changes.append("endpoint \(path) added")
            case .filtersChanged(let pipeline, let endpoint):
                guard let runtime = table[path] else { continue }
                runtime.replace(pipeline: pipeline, transports: Set(endpoint.transports))
                recheck.append((runtime, pipeline))
            case .changed(let pipeline, let endpoint):
                guard let runtime = table[path] else { continue }
                runtime.replace(pipeline: pipeline, transports: Set(endpoint.transports))
                let open = runtime.open.all
                changes.append("endpoint \(path) changed (\(open.count) connections closed with 1001 over \(drainSettings.drain) to reconnect)")
                Task {
                    await closePaced(open, over: drainSettings.drain.duration, jitter: drainSettings.reconnectJitter.duration,
                                     reason: "endpoint settings changed by a configuration reload")
                }
            }
        }
        endpoints.all = table
        for (path, runtime) in removed {
            let open = runtime.open.all
            for connection in open { connection.send(.close(code: 1001, reason: "endpoint \(path) was removed by a configuration reload")) }
            changes.append("endpoint \(path) removed (\(open.count) connections closed with 1001)")
        }
        for (runtime, pipeline) in recheck {
            let (kept, closed) = await refilter(runtime, with: pipeline, drain: drainSettings)
            changes.append("endpoint \(pipeline.path) filters changed (\(kept) connections admitted again, \(closed) closed)")
        }

        let newNames = Set(new.sources.map(\.name))
        for source in old.sources where !newNames.contains(source.name) {
            await sourceRunner.stop(source.name)
            assembly.supervisor.unregister(name: source.name)
            live.withLockedValue { _ = $0.sourceRoutes.removeValue(forKey: source.name) }
            changes.append("source \(source.name) (\(source.plugin)) removed")
        }
        for built in builtSources {
            let name = built.configuration.name
            let existed = oldSources[name] != nil
            if existed { await sourceRunner.stop(name) }
            assembly.supervisor.register(name: name, plugin: built.configuration.plugin)
            live.withLockedValue { $0.sourceRoutes[name] = built.routes }
            guard sourceRunner.start(name: name, source: Self.leased(built.source, name: name, run: built.configuration.run, bus: bus, supervisor: assembly.supervisor)) else {
                changes.append("source \(name) (\(built.configuration.plugin)) not started: the gateway is shutting down")
                continue
            }
            changes.append("source \(name) (\(built.configuration.plugin)) \(existed ? "restarted with its new settings" : "added")")
        }
        live.withLockedValue { state in
            if state.configuration.adminKey != new.adminKey { changes.append("admin_key changed") }
            if state.configuration.dashboard != new.dashboard { changes.append("dashboard changed") }
            if state.configuration.shutdown != new.shutdown { changes.append("shutdown settings changed") }
            state.configuration = new
            state.adminKey = Self.adminKey(new)
        }
        reloads.applied.add(1, ordering: .relaxed)
        reloads.lastAppliedAt.store(UnixTime.nowMilliseconds(), ordering: .relaxed)
        if changes.isEmpty { changes.append("nothing changed") }
        logger.notice("configuration reloaded", metadata: ["trigger": .string(trigger), "changes": .string("\(changes.count)")])
        for change in changes { logger.notice("reload: \(change)") }
        return ReloadOutcome(applied: true, changes: changes, errors: [])
    }

    private func rejected(_ errors: [String], trigger: String) -> ReloadOutcome {
        reloads.rejected.add(1, ordering: .relaxed)
        logger.error("configuration reload rejected; the configuration in force is kept", metadata: ["trigger": .string(trigger), "errors": .string("\(errors.count)")])
        for error in errors { logger.error("reload: \(error)") }
        return ReloadOutcome(applied: false, changes: [], errors: errors)
    }

    /// Runs each open connection's request through `pipeline`'s filters and hands the
    /// decision to the connection. A connection without a kept request (SSE, or an endpoint
    /// that had no filters) is closed to reconnect through the new chain.
    private func refilter(_ runtime: EndpointRuntime, with pipeline: EndpointPipeline, drain: ShutdownConfiguration) async -> (kept: Int, closed: Int) {
        var kept = 0
        var closed = 0
        var reconnect: [OpenConnection] = []
        for connection in runtime.open.all {
            guard let request = connection.request, connection.end == nil else {
                reconnect.append(connection)
                continue
            }
            let decision = await pipeline.runFilters(request, recheck: true)
            if case .admit = decision { kept += 1 } else { closed += 1 }
            connection.send(.refiltered(pipeline, decision))
        }
        closed += reconnect.count
        if !reconnect.isEmpty {
            Task {
                await closePaced(reconnect, over: drain.drain.duration, jitter: drain.reconnectJitter.duration, reason: "endpoint filters changed by a configuration reload")
            }
        }
        return (kept, closed)
    }

    /// What only a restart can change outside the kernel: the listening socket, its limits,
    /// TLS on or off, and the cluster.
    static func restartRequirements(old: GatewayConfiguration, new: GatewayConfiguration) -> [String] {
        var problems: [String] = []
        let (a, b) = (old.listener, new.listener)
        if a.host != b.host || a.port != b.port { problems.append("listener.host/port changed") }
        if a.maxConnections != b.maxConnections || a.maxConnectionsPerIP != b.maxConnectionsPerIP { problems.append("listener connection limits changed") }
        if a.handshakeTimeout != b.handshakeTimeout || a.idleTimeout != b.idleTimeout || a.maxHeaderSize != b.maxHeaderSize {
            problems.append("listener timeouts or max_header_size changed")
        }
        if (a.tls == nil) != (b.tls == nil) { problems.append("listener.tls \(a.tls == nil ? "added" : "removed")") }
        if old.cluster.map({ "\($0.redis.host):\($0.redis.port)/\($0.redis.database) \($0.channel) \($0.leaseTTL)" })
            != new.cluster.map({ "\($0.redis.host):\($0.redis.port)/\($0.redis.database) \($0.channel) \($0.leaseTTL)" }) {
            problems.append("cluster changed")
        }
        return problems
    }
}
