/// Renders the registry's plugin specs as Markdown (`Docs/plugins-reference.md`); a test
/// keeps the committed file identical to this output.
public enum PluginDocumentation {
    public static func markdown(for registry: PluginRegistry) -> String {
        var text = "# Plugin reference\n\n"
        text += "Generated from the plugins' specs by `switchboard plugins`; do not edit by hand.\n"
        func section(_ title: String, _ entries: [(String, PluginSpec)]) {
            guard !entries.isEmpty else { return }
            text += "\n## \(title)\n"
            for (name, spec) in entries.sorted(by: { $0.0 < $1.0 }) {
                text += "\n### `\(name)`\n\n\(spec.summary)\n"
                let former = registry.formerNames.filter { $0.value == name }.keys.sorted()
                if !former.isEmpty {
                    text += "\nFormerly \(former.map { "`\($0)`" }.joined(separator: ", ")): still accepted, with a deprecation warning from `check`.\n"
                }
                if !spec.keys.isEmpty {
                    text += "\n| key | type / default | meaning |\n|---|---|---|\n"
                    for key in spec.keys {
                        text += "| `\(key.name)` | \(key.type.replacingPipes()) | \(key.summary.replacingPipes()) |\n"
                    }
                }
                for example in spec.examples {
                    text += "\n```yaml\n\(example)\n```\n"
                }
            }
        }
        section("Sources", registry.sources.map { ($0.key, $0.value.spec) })
        section("Filters", registry.filters.map { ($0.key, $0.value.spec) })
        section("Encoders", registry.encoders.map { ($0.key, $0.value.spec) })
        return text
    }
}

extension String {
    fileprivate func replacingPipes() -> String {
        split(separator: "|", omittingEmptySubsequences: false).joined(separator: "\\|")
    }
}
