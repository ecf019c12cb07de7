import Foundation
import SwitchboardCore
import Yams

/// Every problem found in a configuration file, sorted by position.
public struct ConfigurationError: Error, Sendable, CustomStringConvertible {
    public var diagnostics: [Diagnostic]

    public init(diagnostics: [Diagnostic]) {
        self.diagnostics = diagnostics
    }

    /// One diagnostic per line.
    public var description: String {
        diagnostics.map(\.description).joined(separator: "\n")
    }
}

/// Reads YAML into a validated ``GatewayConfiguration``, collecting all errors at once.
///
/// ```swift
/// let config = try ConfigurationLoader(registry: registry).load(contentsOf: "configs/default.yaml")
/// ```
public struct ConfigurationLoader: Sendable {
    /// Files larger than this are refused before parsing.
    public static let maximumFileSize = 4 * 1024 * 1024

    public var registry: PluginRegistry
    public var environment: [String: String]
    /// Unset `${VAR}`s become warnings (read as empty) instead of errors, and what follows
    /// from them is not reported: validating a file in CI without its secrets.
    public var allowsUnsetVariables = false

    public init(registry: PluginRegistry, environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.registry = registry
        self.environment = environment
    }

    /// Loads and validates the file at `path`.
    public func load(contentsOf path: String) throws(ConfigurationError) -> GatewayConfiguration {
        try load(yaml: read(path), file: path)
    }

    /// Validates the file at `path`: every error, and the warnings (unset variables when
    /// ``allowsUnsetVariables``).
    public func check(contentsOf path: String) -> (errors: [Diagnostic], warnings: [Diagnostic]) {
        let text: String
        do { text = try read(path) } catch { return (error.diagnostics, []) }
        let result = decode(yaml: text, file: path)
        return (result.errors, result.warnings)
    }

    private func read(_ path: String) throws(ConfigurationError) -> String {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw ConfigurationError(diagnostics: [
                Diagnostic(file: path, line: 1, column: 1, path: "", message: "cannot read file: \(error.localizedDescription)")
            ])
        }
        guard data.count <= Self.maximumFileSize else {
            throw ConfigurationError(diagnostics: [
                Diagnostic(file: path, line: 1, column: 1, path: "", message: "file is larger than \(Self.maximumFileSize / 1024 / 1024)MiB")
            ])
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw ConfigurationError(diagnostics: [
                Diagnostic(file: path, line: 1, column: 1, path: "", message: "file is not valid UTF-8")
            ])
        }
        return text
    }

    /// Loads and validates YAML text; `file` names it in diagnostics.
    public func load(yaml: String, file: String) throws(ConfigurationError) -> GatewayConfiguration {
        let result = decode(yaml: yaml, file: file)
        if let configuration = result.configuration, result.errors.isEmpty { return configuration }
        throw ConfigurationError(diagnostics: result.errors)
    }

    /// Decodes YAML text and returns everything found: the configuration (nil when it
    /// could not be decoded), the errors and the warnings.
    public func check(yaml: String, file: String) -> (configuration: GatewayConfiguration?, errors: [Diagnostic], warnings: [Diagnostic]) {
        decode(yaml: yaml, file: file)
    }

    private func decode(yaml: String, file: String) -> (configuration: GatewayConfiguration?, errors: [Diagnostic], warnings: [Diagnostic]) {
        let root: Node
        do {
            guard let node = try Yams.compose(yaml: yaml) else {
                return (nil, [Diagnostic(file: file, line: 1, column: 1, path: "", message: "the configuration is empty", hint: "see configs/default.yaml")], [])
            }
            root = node
        } catch {
            return (nil, [Self.diagnostic(forYAMLError: error, file: file)], [])
        }
        let session = DecodingSession(file: file, environment: environment, registry: registry)
        session.allowsUnsetVariables = allowsUnsetVariables
        let decoder = NodeDecoder(session: session, node: root, path: [], plugin: nil)
        let configuration = try? decoder.decodeValue(GatewayConfiguration.self, node: root, path: [])
        session.reportUnknownKeys()
        let diagnostics = session.sortedDiagnostics
        let warnings = session.warnings.sorted { ($0.line, $0.column) < ($1.line, $1.column) }
        if configuration == nil && diagnostics.isEmpty && warnings.isEmpty {
            return (nil, [Diagnostic(file: file, line: 1, column: 1, path: "", message: "the configuration could not be decoded")], [])
        }
        return (configuration, diagnostics, warnings)
    }

    static func diagnostic(forYAMLError error: any Error, file: String) -> Diagnostic {
        switch error {
        case YamlError.scanner(let context, let problem, let mark, _),
            YamlError.parser(let context, let problem, let mark, _),
            YamlError.composer(let context, let problem, let mark, _):
            let detail = context.map { "\($0.text): " } ?? ""
            return Diagnostic(file: file, line: mark.line, column: mark.column, path: "", message: "invalid YAML: \(detail)\(problem)")
        case YamlError.duplicatedKeysInMapping(let duplicates, let context):
            return Diagnostic(
                file: file, line: context.mark.line, column: context.mark.column, path: "",
                message: "duplicate keys in mapping: \(duplicates.joined(separator: ", "))"
            )
        case YamlError.reader(let problem, _, _, _):
            return Diagnostic(file: file, line: 1, column: 1, path: "", message: "invalid YAML: \(problem)")
        default:
            return Diagnostic(file: file, line: 1, column: 1, path: "", message: "invalid YAML: \(error)")
        }
    }
}

extension ConfigurationLoader {
    /// Decodes one plugin configuration from YAML with the same rules as the full loader
    /// (positions, unknown keys, all errors at once). For plugin tests and tools.
    ///
    /// ```swift
    /// let config = try ConfigurationLoader.decodePluginConfig(TimerSource.Config.self, yaml: "every: 2s\ntopic: t")
    /// ```
    public static func decodePluginConfig<Config: Decodable>(
        _ type: Config.Type,
        yaml: String,
        plugin: String = "plugin",
        environment: [String: String] = [:]
    ) throws(ConfigurationError) -> Config {
        let root: Node
        do {
            root = try Yams.compose(yaml: yaml) ?? Node("", .implicit, .plain)
        } catch {
            throw ConfigurationError(diagnostics: [diagnostic(forYAMLError: error, file: "<plugin>")])
        }
        let session = DecodingSession(file: "<plugin>", environment: environment, registry: PluginRegistry())
        let decoder = NodeDecoder(session: session, node: root, path: [], plugin: plugin)
        let declared = (Config.self as? any PluginConfig.Type)?.keys.map(\.name) ?? []
        let value = try? decoder.decodePlugin(declaring: declared) { try Config(from: $0) }
        session.reportUnknownKeys()
        let diagnostics = session.sortedDiagnostics
        if let value, diagnostics.isEmpty { return value }
        throw ConfigurationError(diagnostics: diagnostics)
    }
}

extension ConfigurationLoader {
    /// What a plugin's decoder made of a documented example: the first mapping in `yaml`
    /// with `plugin: <plugin>` is decoded by `decode` (a registry factory's `decode`), and
    /// the result is the keys the decoder asked for (present or not, kernel keys such as
    /// `name` left out), those it asked for in each nested mapping (by path, list indices
    /// written `[]`), and every problem found. Nothing is added for declared keys, so a
    /// test can compare what the decoder really reads with what the plugin declares.
    public static func probePluginExample(
        yaml: String,
        plugin: String,
        environment: [String: String] = [:],
        decode: (any Decoder) throws -> Void
    ) -> (asked: Set<String>, nested: [String: Set<String>], diagnostics: [Diagnostic]) {
        let kernelKeys: Set<String> = ["plugin", "name", "run", "retain", "enabled"]
        let root: Node?
        do {
            root = try Yams.compose(yaml: yaml)
        } catch {
            return ([], [:], [diagnostic(forYAMLError: error, file: "<example>")])
        }
        guard let block = root.flatMap({ firstBlock(of: plugin, in: $0) }), case .mapping(let mapping) = block else {
            return ([], [:], [Diagnostic(file: "<example>", line: 1, column: 1, path: "", message: "no mapping with 'plugin: \(plugin)' in the example")])
        }
        let session = DecodingSession(file: "<example>", environment: environment, registry: PluginRegistry())
        let tracker = session.tracker(for: mapping, path: [], plugin: plugin)
        tracker.asked.formUnion(kernelKeys)
        let decoder = NodeDecoder(session: session, node: block, path: [], plugin: plugin)
        _ = try? decoder.decodePlugin(declaring: []) { try decode($0) }
        session.reportUnknownKeys()
        return (tracker.asked.subtracting(kernelKeys), session.nestedAskedKeys(), session.sortedDiagnostics)
    }

    private static func firstBlock(of plugin: String, in node: Node) -> Node? {
        switch node {
        case .mapping(let mapping):
            if mapping.first(where: { $0.key.scalar?.string == "plugin" })?.value.scalar?.string == plugin { return node }
            return mapping.lazy.compactMap { firstBlock(of: plugin, in: $0.value) }.first
        case .sequence(let sequence):
            return sequence.lazy.compactMap { firstBlock(of: plugin, in: $0) }.first
        case .scalar, .alias:
            return nil
        }
    }
}
