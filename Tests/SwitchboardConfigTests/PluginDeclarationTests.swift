import Foundation
import SwitchboardConfig
import SwitchboardCore
import SwitchboardPlugins
import TimerPlugin
import Testing

/// Each plugin declares its keys once (``PluginConfig/keys``): the decoder reads exactly
/// those, the documentation lists exactly those, and every documented example decodes.
@Suite struct PluginDeclarationTests {
    struct Plugin: CustomTestStringConvertible, Sendable {
        let kind: String
        let name: String
        let keys: [String]
        /// Declared keys of nested mappings, by path (`keys[]`, `claims`).
        let nested: [String: Set<String>]
        let examples: [String]
        let decode: @Sendable (any Decoder) throws -> Void
        var testDescription: String { "\(kind) \(name)" }
    }

    static func nestedDeclarations(_ keys: [any PluginKey]) -> [String: Set<String>] {
        var result: [String: Set<String>] = [:]
        for key in keys where !key.nested.isEmpty {
            let path = key.name + (key.documentation.type.hasPrefix("list") ? "[]" : "")
            result[path] = Set(key.nested.map(\.name))
        }
        return result
    }

    static let plugins: [Plugin] = {
        let registry = BuiltinPlugins.registry
        let sources = registry.sources.values.map { factory in
            Plugin(
                kind: "source", name: factory.typeName, keys: factory.keys.map(\.name), nested: nestedDeclarations(factory.keys), examples: factory.spec.examples
            ) { _ = try factory.decode($0) }
        }
        let filters = registry.filters.values.map { factory in
            Plugin(
                kind: "filter", name: factory.typeName, keys: factory.keys.map(\.name), nested: nestedDeclarations(factory.keys), examples: factory.spec.examples
            ) { _ = try factory.decode($0) }
        }
        return (sources + filters).sorted { ($0.kind, $0.name) < ($1.kind, $1.name) }
    }()

    /// `${NAME}` in an example stands for a secret: any long enough value.
    static func environment(for example: String) -> [String: String] {
        var environment: [String: String] = [:]
        var rest = Substring(example)
        while let start = rest.range(of: "${") {
            let after = rest[start.upperBound...]
            guard let end = after.firstIndex(where: { $0 == "}" || $0 == ":" }) else { break }
            // `${NAME:-default}` already has a value.
            if after[end] == "}" { environment[String(after[..<end])] = "example-secret-0123456789abcdef0123456789abcdef" }
            rest = after[end...]
        }
        return environment
    }

    @Test(arguments: plugins)
    func everyExampleDecodesAndTheDecoderReadsExactlyTheDeclaredKeys(plugin: Plugin) {
        #expect(!plugin.examples.isEmpty, "\(plugin.testDescription) documents no example")
        #expect(Set(plugin.keys).count == plugin.keys.count, "a key is declared twice: \(plugin.keys)")
        for example in plugin.examples {
            let probe = ConfigurationLoader.probePluginExample(
                yaml: example, plugin: plugin.name, environment: Self.environment(for: example), decode: plugin.decode
            )
            #expect(probe.diagnostics.isEmpty, "example of \(plugin.testDescription):\n\(example)\n→ \(probe.diagnostics.map(\.description))")
            #expect(probe.asked == Set(plugin.keys), "read but not declared: \(probe.asked.subtracting(plugin.keys).sorted()); declared but not read: \(Set(plugin.keys).subtracting(probe.asked).sorted())")
            // Entries of a nested list or mapping the example has: read exactly their declared keys.
            for (path, declared) in plugin.nested {
                guard let asked = probe.nested[path] else { continue }
                #expect(asked == declared, "\(path): read but not declared: \(asked.subtracting(declared).sorted()); declared but not read: \(declared.subtracting(asked).sorted())")
            }
        }
    }

    @Test func theExamplesCoverNestedDeclarations() {
        // api_key's and jwt's examples have key entries, jwt's a claims mapping: the nested
        // check above is not vacuous.
        let covered = Self.plugins.flatMap { plugin in
            plugin.examples.flatMap { example in
                ConfigurationLoader.probePluginExample(yaml: example, plugin: plugin.name, environment: Self.environment(for: example), decode: plugin.decode)
                    .nested.keys.filter { plugin.nested[$0] != nil }.map { "\(plugin.name).\($0)" }
            }
        }
        #expect(Set(covered).isSuperset(of: ["api_key.keys[]", "jwt.keys[]", "jwt.claims"]), "\(covered)")
    }

    @Test func aBlockWithAMisspeltKeyGetsDidYouMeanEvenWhenItsValidationFails() throws {
        let error = #expect(throws: ConfigurationError.self) {
            _ = try ConfigurationLoader.decodePluginConfig(TimerSource.Config.self, yaml: "evrey: 2s\ntopic: t\nemit: http", plugin: "timer")
        }
        let messages = error?.diagnostics.map(\.description) ?? []
        #expect(messages.contains { $0.contains("unknown key 'evrey' (did you mean 'every'?)") }, "\(messages)")
    }
}
