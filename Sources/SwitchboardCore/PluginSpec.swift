/// Documentation of a plugin, used for generated docs and `switchboard plugins`.
public struct PluginSpec: Sendable {
    /// One-line summary.
    public var summary: String
    /// Each configuration key: name, type/default text, description.
    public var keys: [Key]
    /// YAML examples.
    public var examples: [String]

    /// One documented configuration key.
    public struct Key: Sendable {
        public var name: String
        public var type: String
        public var summary: String

        public init(_ name: String, _ type: String, _ summary: String) {
            self.name = name
            self.type = type
            self.summary = summary
        }
    }

    public init(summary: String, keys: [Key] = [], examples: [String] = []) {
        self.summary = summary
        self.keys = keys
        self.examples = examples
    }
}
