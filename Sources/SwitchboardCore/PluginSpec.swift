/// Documentation of a plugin, used for generated docs and `switchboard plugins`. Its keys
/// come from the plugin's ``PluginConfig/keys`` declarations (the registry fills them in).
public struct PluginSpec: Sendable {
    /// One-line summary.
    public var summary: String
    /// Each configuration key: name, type/default text, description.
    public var keys: [Key]
    /// YAML examples; a test decodes each one.
    public var examples: [String]

    /// One documented configuration key.
    public struct Key: Sendable, Equatable {
        public var name: String
        public var type: String
        public var summary: String

        public init(_ name: String, _ type: String, _ summary: String) {
            self.name = name
            self.type = type
            self.summary = summary
        }
    }

    public init(summary: String, examples: [String] = []) {
        self.summary = summary
        self.keys = []
        self.examples = examples
    }

    /// This spec with the documentation rows of `declared`.
    public func documenting(_ declared: [any PluginKey]) -> PluginSpec {
        var spec = self
        spec.keys = Self.rows(for: declared)
        return spec
    }
}
