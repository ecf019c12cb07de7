import ArgumentParser
import Foundation
import SwitchboardCore
import SwitchboardPlugins

/// `switchboard new-plugin source|filter|encoder NAME [--root DIR]`: writes a plugin that
/// builds and passes the contract kit unchanged, and wires it in.
struct NewPluginCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "new-plugin",
        abstract: "Write a new plugin: its folder, its Package.swift line, its registry line, a contract-kit test and a doc stub.",
        discussion: """
            Run it at the top of a Switchboard checkout. NAME is snake_case (kafka_topics); the
            folder is Plugins/<UpperCamelName>/. Then: swift build, swift test --filter \
            <UpperCamelName>, and swift run switchboard plugins > Docs/plugins-reference.md.
            """
    )

    enum Kind: String, ExpressibleByArgument, CaseIterable {
        case source, filter, encoder
    }

    @Argument(help: "source, filter or encoder")
    var kind: Kind

    @Argument(help: "The plugin's name in YAML, snake_case (kafka_topics).")
    var name: String

    @Option(help: "The checkout to write into.")
    var root: String = "."

    func run() throws {
        let scaffold = try PluginScaffold(kind: kind, name: name)
        let written = try scaffold.write(into: URL(fileURLWithPath: root))
        print("wrote:")
        for path in written { print("  \(path)") }
        print("""
            next:
              swift build --build-tests && swift test --skip-build --filter \(scaffold.folder)
              swift run switchboard plugins > Docs/plugins-reference.md
            """)
    }
}

/// What `new-plugin` writes, as text, and where.
struct PluginScaffold {
    let kind: NewPluginCommand.Kind
    let name: String
    /// `kafka_topics` → `KafkaTopics`.
    let folder: String

    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    init(kind: NewPluginCommand.Kind, name: String) throws {
        guard PluginRegistry.isConventional(name), name.count <= 40 else {
            throw Failure(description: "'\(name)' is not a plugin name: use lower-case snake_case starting with a letter (kafka_topics), at most 40 characters")
        }
        let registry = BuiltinPlugins.registry
        let taken = Set(registry.sources.keys).union(registry.filters.keys).union(registry.encoders.keys).union(registry.formerNames.keys)
        guard !taken.contains(name) else {
            throw Failure(description: "'\(name)' is already a built-in plugin's name; pick another (see switchboard plugins)")
        }
        self.kind = kind
        self.name = name
        folder = name.split(separator: "_").map { $0.prefix(1).uppercased() + $0.dropFirst() }.joined()
    }

    /// The Swift type the registry registers.
    var typeName: String {
        switch kind {
        case .source: return folder + "Source"
        case .filter: return folder + "Filter"
        case .encoder: return folder + "EncoderPlugin"
        }
    }

    /// Writes the folder and edits Package.swift and the registry; returns what it touched.
    /// Refuses to overwrite an existing folder or to register a name twice.
    func write(into root: URL) throws -> [String] {
        let fileManager = FileManager.default
        let package = root.appendingPathComponent("Package.swift")
        let registry = root.appendingPathComponent("Sources/SwitchboardPlugins/BuiltinPlugins.swift")
        let pluginDirectory = root.appendingPathComponent("Plugins/\(folder)")
        guard fileManager.fileExists(atPath: package.path), fileManager.fileExists(atPath: registry.path) else {
            throw Failure(description: "\(root.path) is not a Switchboard checkout (no Package.swift or Sources/SwitchboardPlugins/BuiltinPlugins.swift)")
        }
        let existing = (try? fileManager.contentsOfDirectory(atPath: root.appendingPathComponent("Plugins").path)) ?? []
        if let clash = existing.first(where: { $0.lowercased() == folder.lowercased() }) {
            throw Failure(description: "Plugins/\(clash) already exists")
        }
        let packageText = try Self.inserting(packageLine, into: String(contentsOf: package, encoding: .utf8))
        let registryText = try registering(into: String(contentsOf: registry, encoding: .utf8))
        let files: [(String, String)] = [
            ("Plugins/\(folder)/Sources/\(typeName).swift", sourceFile),
            ("Plugins/\(folder)/Tests/\(folder)ContractTests.swift", testFile),
            ("Plugins/\(folder)/README.md", readme),
        ]
        do {
            for (path, text) in files {
                let url = root.appendingPathComponent(path)
                try fileManager.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
                try text.write(to: url, atomically: true, encoding: .utf8)
            }
            try packageText.write(to: package, atomically: true, encoding: .utf8)
            try registryText.write(to: registry, atomically: true, encoding: .utf8)
        } catch {
            // Half a plugin is worse than none: leave the checkout as it was.
            try? fileManager.removeItem(at: pluginDirectory)
            throw error
        }
        return files.map(\.0) + ["Package.swift", "Sources/SwitchboardPlugins/BuiltinPlugins.swift"]
    }

    // MARK: the two edits

    var packageLine: String {
        "        (\"\(folder)\", [\(kind == .encoder ? "nio" : "")], []),"
    }

    /// Adds `line` as the last entry of `builtInPlugins`.
    static func inserting(_ line: String, into package: String) throws -> String {
        var lines = package.components(separatedBy: "\n")
        guard let start = lines.firstIndex(where: { $0.contains("var builtInPlugins") }),
              let open = lines[start...].firstIndex(where: { $0.trimmingSpaces() == "return [" }),
              let close = lines[open...].firstIndex(where: { $0.trimmingSpaces() == "]" })
        else {
            throw Failure(description: "Package.swift has no `builtInPlugins` list ending in `return [` … `]`")
        }
        let folder = line.split(separator: "\"").dropFirst().first.map(String.init) ?? ""
        if lines[open..<close].contains(where: { $0.contains("(\"\(folder)\",") }) {
            throw Failure(description: "Package.swift already declares the plugin \(folder)")
        }
        lines.insert(line, at: close)
        return lines.joined(separator: "\n")
    }

    /// Adds the import and the `register` line to the registry file.
    func registering(into registry: String) throws -> String {
        var lines = registry.components(separatedBy: "\n")
        if lines.contains(where: { $0.contains("\(typeName).self") }) {
            throw Failure(description: "the registry already registers \(typeName)")
        }
        let anchor: String
        let call: String
        switch kind {
        case .source: (anchor, call) = ("// Encoders", "registry.register(source: \(typeName).self)")
        case .encoder: (anchor, call) = ("// Filters", "registry.register(encoder: \(typeName).self)")
        case .filter: (anchor, call) = ("return registry", "registry.register(filter: \(typeName).self)")
        }
        guard let position = lines.firstIndex(where: { $0.trimmingSpaces() == anchor }) else {
            throw Failure(description: "BuiltinPlugins.swift has no '\(anchor)' line to register before")
        }
        lines.insert("        " + call, at: position)
        // The file starts with its imports, one per line, sorted: keep them so.
        guard let first = lines.firstIndex(where: { $0.hasPrefix("import ") }) else {
            throw Failure(description: "BuiltinPlugins.swift has no imports")
        }
        let end = lines[first...].firstIndex(where: { !$0.hasPrefix("import ") }) ?? lines.endIndex
        let sortedImports = (Array(lines[first..<end]) + ["import \(folder)Plugin"]).sorted()
        lines.replaceSubrange(first..<end, with: sortedImports)
        return lines.joined(separator: "\n")
    }

    // MARK: templates

    var sourceFile: String {
        switch kind {
        case .source: return sourceTemplate
        case .filter: return filterTemplate
        case .encoder: return encoderTemplate
        }
    }

    private var sourceTemplate: String {
        #"""
        import SwitchboardCore

        /// The `\#(name)` source. Written by `switchboard new-plugin`: it emits a counter on
        /// `topic` every `interval`; replace `Runner.run()` with your backend's client.
        ///
        /// ```yaml
        /// sources:
        ///   - plugin: \#(name)
        ///     topic: example
        ///     interval: 1s
        /// ```
        public struct \#(typeName): SourcePlugin {
            public static let typeName = "\#(name)"
            public static let spec = PluginSpec(
                summary: "TODO: one line saying what this source relays",
                examples: ["sources:\n  - plugin: \#(name)\n    topic: example\n    interval: 1s"]
            )

            public struct Config: PluginConfig {
                public var topic: String
                public var interval: ConfigDuration

                // Each key once: its name, type, default and meaning. `check`, the reference
                // and the decoder all read these.
                static let topic = RequiredKey<String>("topic", "string", "Topic of the events.")
                static let interval = DefaultedKey("interval", "duration", default: ConfigDuration.seconds(1), "Time between events.")
                public static let keys: [any PluginKey] = [topic, interval]

                public init(from decoder: any Decoder) throws {
                    let container = try decoder.container(keyedBy: PluginCodingKey.self)
                    topic = try container.read(Self.topic)
                    interval = try container.read(Self.interval)
                    // Validate only after every key was read.
                    guard TopicPattern(topic) != nil, !topic.contains("*") else {
                        throw ConfigValidationError("invalid topic '\(topic)'", hint: TopicPattern.syntaxHelp)
                    }
                    guard interval.nanoseconds >= 1_000_000 else { throw ConfigValidationError("'interval' must be at least 1ms") }
                }
            }

            public static func build(config: Config, context: any SourceContext) async throws -> any EventSource {
                Runner(config: config, context: context)
            }

            /// One `run()` per connection to the backend: connect, emit until the connection
            /// is lost, then throw (the kernel retries with backoff). Cancellation stops it.
            struct Runner: EventSource {
                let config: Config
                let context: any SourceContext

                func run() async throws {
                    var count: Int64 = 0
                    while !Task.isCancelled {
                        count += 1
                        context.emit(Event(topic: config.topic, type: "tick", data: ["count": .int(count)]))
                        try await Task.sleep(for: config.interval.duration)
                    }
                }
            }
        }

        """#
    }

    private var filterTemplate: String {
        #"""
        import SwitchboardCore

        /// The `\#(name)` filter. Written by `switchboard new-plugin`: it admits requests whose
        /// `header` carries `value`; replace `Checker.admit` with your own decision.
        ///
        /// ```yaml
        /// filters:
        ///   - plugin: \#(name)
        ///     value: ${EXAMPLE_VALUE}
        /// ```
        public struct \#(typeName): FilterPlugin {
            public static let typeName = "\#(name)"
            public static let spec = PluginSpec(
                summary: "TODO: one line saying what this filter admits",
                examples: ["filters:\n  - plugin: \#(name)\n    header: X-Example\n    value: ${EXAMPLE_VALUE}"]
            )

            public struct Config: PluginConfig {
                public var header: String
                public var value: Secret
                public var mode: FilterMode

                static let header = DefaultedKey("header", "string", default: "X-Example", "Header carrying the value.")
                static let value = RequiredKey<Secret>("value", "string", "The value the header must carry (use ${ENV}).")
                static let mode = FilterMode.key
                public static let keys: [any PluginKey] = [header, value, mode]

                public init(from decoder: any Decoder) throws {
                    let container = try decoder.container(keyedBy: PluginCodingKey.self)
                    header = try container.read(Self.header)
                    value = try container.read(Self.value)
                    mode = try container.read(Self.mode)
                    guard !value.value.isEmpty else { throw ConfigValidationError("'value' is empty") }
                }
            }

            public static func build(config: Config, context: FilterContext) async throws -> any Filter {
                Checker(config: config, denials: context.denials)
            }

            struct Checker: Filter {
                let config: Config
                let denials: FilterDenials

                func admit(_ request: UpgradeRequest, principal: Principal?) async -> FilterDecision {
                    let offered = request.header(config.header).map { Array($0.utf8) } ?? []
                    let decision: FilterDecision = ConstantTime.equal(offered, Array(config.value.value.utf8))
                        ? .admit(principal)
                        : .deny(status: 403, reason: "missing or wrong \(config.header)")
                    return denials.apply(decision, remote: request.remoteAddress, mode: config.mode, principal: principal)
                }
            }
        }

        """#
    }

    private var encoderTemplate: String {
        #"""
        import NIOCore
        import SwitchboardCore

        /// The `\#(name)` encoder. Written by `switchboard new-plugin`: the JSON envelope in
        /// text frames; replace `encode` and `decode` with your format.
        public struct \#(typeName): EncoderPlugin {
            public static let typeName = "\#(name)"
            public static let spec = PluginSpec(
                summary: "TODO: one line saying what this format is",
                examples: [#"{"type":"metrics","topic":"metrics","timestamp":1704225600,"data":{"cpu":0.5}}"#]
            )
            public static func make() -> any EventEncoder { \#(folder)EventEncoder() }
        }

        public struct \#(folder)EventEncoder: EventEncoder {
            public let name = "\#(name)"
            public let subprotocol = "switchboard.\#(name)"
            public let frameKind = FrameKind.text

            public init() {}

            /// Runs once per event, never per recipient: it must be pure.
            public func encode(_ event: Event, into buffer: inout ByteBuffer) {
                JSONWriter.write(event.shape == .flat ? event.flatValue : event.envelopeValue(), into: &buffer)
            }

            public func encode(_ reply: ServerReply, timestamp: Int64, into buffer: inout ByteBuffer) {
                JSONWriter.write(reply.envelope(timestamp: timestamp), into: &buffer)
            }

            /// Client bytes are hostile: return an error, never trap.
            public func decode(_ payload: ByteBuffer) -> Result<ClientMessage, ClientMessageError> {
                do {
                    return ClientMessageDecoding.interpret(try JSONParser.parse(payload.readableBytesView))
                } catch {
                    return .failure(ClientMessageError(code: "bad_message", message: "\(error)"))
                }
            }
        }

        """#
    }

    var testFile: String {
        let imports = """
            import Logging
            import NIOCore
            import \(folder)Plugin
            import SwitchboardConfig
            import SwitchboardCore
            import SwitchboardTesting
            import Testing

            """
        switch kind {
        case .source:
            return imports + #"""

                /// The `\#(name)` source passes the plugin contract kit. Once it talks to a backend,
                /// make `trigger` produce an event there and give `backend:` its stop and start.
                @Suite struct \#(folder)ContractTests {
                    @Test func passesTheSourceContract() async throws {
                        let config = try ConfigurationLoader.decodePluginConfig(
                            \#(typeName).Config.self, yaml: "topic: example\ninterval: 50ms", plugin: \#(typeName).typeName
                        )
                        try await SourceContract(
                            build: { context in try await \#(typeName).build(config: config, context: context) },
                            trigger: { _, _ in }
                        ).verify()
                    }
                }

                """#
        case .filter:
            return imports + #"""

                /// The `\#(name)` filter passes the plugin contract kit.
                @Suite struct \#(folder)ContractTests {
                    @Test func passesTheFilterContract() async throws {
                        let config = try ConfigurationLoader.decodePluginConfig(
                            \#(typeName).Config.self, yaml: "value: example-value", plugin: \#(typeName).typeName
                        )
                        let filter = try await \#(typeName).build(config: config, context: FilterContext(endpointPath: "/ws", logger: Logger(label: "test")))
                        try await FilterContract(
                            filter: filter,
                            admitted: UpgradeRequest(path: "/ws", query: [], headers: [("X-Example", "example-value")], remoteAddress: "127.0.0.1"),
                            denied: UpgradeRequest(path: "/ws", query: [], headers: [("X-Example", "wrong")], remoteAddress: "127.0.0.1"),
                            deniedStatus: 403
                        ).verify()
                    }
                }

                """#
        case .encoder:
            return imports + #"""

                /// The `\#(name)` encoder passes the plugin contract kit.
                @Suite struct \#(folder)ContractTests {
                    @Test func passesTheEncoderContract() throws {
                        // A format other than JSON: EncoderContract(encoder:parse:write:) with its reader and writer.
                        try EncoderContract.json(\#(folder)EventEncoder()).verify()
                    }
                }

                """#
        }
    }

    var readme: String {
        """
        # `\(name)` (\(kind.rawValue))

        TODO: what it does, for whom, and what it needs (a backend, a secret).

        - Code: `Sources/\(typeName).swift`; its keys are declared once in `Config` and
          appear in `Docs/plugins-reference.md` (`swift run switchboard plugins > Docs/plugins-reference.md`).
        - Tests: `Tests/\(folder)ContractTests.swift` runs the plugin contract kit
          (`Sources/SwitchboardTesting/PluginContract.swift`); add tests of its own behaviour beside it.
        - Wiring: one line in `Package.swift` (`builtInPlugins`) and one in
          `Sources/SwitchboardPlugins/BuiltinPlugins.swift`, both written by `switchboard new-plugin`.
        - Guide: `Docs/writing-a-plugin.md`.

        """
    }
}
