/// A source plugin with its config decoding erased, as stored in the registry.
public struct SourceFactory: Sendable {
    public let typeName: String
    public let spec: PluginSpec
    /// The top-level keys the plugin's config declares.
    public let keys: [any PluginKey]
    /// See ``SourcePlugin/receivesOnEveryInstance``.
    public let receivesOnEveryInstance: Bool
    /// Decodes the plugin's config and returns the builder bound to it.
    public let decode: @Sendable (any Decoder) throws -> SourceBuilder

    public init<P: SourcePlugin>(_ plugin: P.Type) {
        self.typeName = P.typeName
        self.spec = P.spec.documenting(P.Config.keys)
        self.keys = P.Config.keys
        self.receivesOnEveryInstance = P.receivesOnEveryInstance
        self.decode = { decoder in
            let config = try P.Config(from: decoder)
            return SourceBuilder { context in try await P.build(config: config, context: context) }
        }
    }
}

/// A decoded source configuration, ready to build.
public struct SourceBuilder: Sendable {
    public let build: @Sendable (any SourceContext) async throws -> any EventSource
}

/// A filter plugin with its config decoding erased.
public struct FilterFactory: Sendable {
    public let typeName: String
    public let spec: PluginSpec
    /// The top-level keys the plugin's config declares.
    public let keys: [any PluginKey]
    public let decode: @Sendable (any Decoder) throws -> FilterBuilder

    public init<P: FilterPlugin>(_ plugin: P.Type) {
        self.typeName = P.typeName
        self.spec = P.spec.documenting(P.Config.keys)
        self.keys = P.Config.keys
        self.decode = { decoder in
            let config = try P.Config(from: decoder)
            return FilterBuilder { context in try await P.build(config: config, context: context) }
        }
    }
}

/// A decoded filter configuration, ready to build.
public struct FilterBuilder: Sendable {
    public let build: @Sendable (FilterContext) async throws -> any Filter
}

/// An encoder plugin.
public struct EncoderFactory: Sendable {
    public let typeName: String
    public let spec: PluginSpec
    public let make: @Sendable () -> any EventEncoder

    public init<P: EncoderPlugin>(_ plugin: P.Type) {
        self.typeName = P.typeName
        self.spec = P.spec
        self.make = { P.make() }
    }
}

/// Maps the `plugin:` names used in YAML to implementations.
///
/// The executable registers every built-in plugin in one file; tests build their own.
public struct PluginRegistry: Sendable {
    public private(set) var sources: [String: SourceFactory] = [:]
    public private(set) var filters: [String: FilterFactory] = [:]
    public private(set) var encoders: [String: EncoderFactory] = [:]
    /// Former `plugin:` names, mapped to today's: a configuration that still uses one works,
    /// and `check` warns that it is deprecated.
    public private(set) var formerNames: [String: String] = [:]
    /// Names registered more than once (the later registration replaced the earlier one);
    /// a test requires this to be empty for the built-in registry.
    public private(set) var duplicateNames: [String] = []

    public init() {}

    /// Whether `name` follows the naming convention: lower-case snake_case, like every
    /// key in the YAML (`rate_limit`, `redis_stream`).
    public static func isConventional(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, ("a"..."z").contains(first) else { return false }
        return name.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "_" }
    }

    /// Keeps `former` working as another spelling of `current`, with a deprecation warning.
    public mutating func rename(_ former: String, to current: String) {
        formerNames[former] = current
    }

    /// Registers a source plugin under its `typeName`.
    public mutating func register<P: SourcePlugin>(source plugin: P.Type) {
        if sources[P.typeName] != nil || filters[P.typeName] != nil || encoders[P.typeName] != nil { duplicateNames.append(P.typeName) }
        sources[P.typeName] = SourceFactory(plugin)
    }

    /// Registers a filter plugin under its `typeName`.
    public mutating func register<P: FilterPlugin>(filter plugin: P.Type) {
        if sources[P.typeName] != nil || filters[P.typeName] != nil || encoders[P.typeName] != nil { duplicateNames.append(P.typeName) }
        filters[P.typeName] = FilterFactory(plugin)
    }

    /// Registers an encoder plugin under its `typeName`.
    public mutating func register<P: EncoderPlugin>(encoder plugin: P.Type) {
        if sources[P.typeName] != nil || filters[P.typeName] != nil || encoders[P.typeName] != nil { duplicateNames.append(P.typeName) }
        encoders[P.typeName] = EncoderFactory(plugin)
    }
}
