import APIKeyPlugin
import JSONPlugin
import JWTPlugin
import MessagePackPlugin
import OriginPlugin
import PostgresPlugin
import RateLimitPlugin
import RedisPlugin
import SwitchboardCore
import TimerPlugin
import WebhookPlugin

/// The registry index: every built-in plugin, registered by name. Adding a plugin is its
/// folder under `Plugins/`, one line in `Package.swift` (`builtInPlugins`) and one line
/// here; `Docs/plugins-reference.md` is generated from the registry
/// (`switchboard plugins > Docs/plugins-reference.md`). A library target, so that the executable and the
/// tests share it.
public enum BuiltinPlugins {
    public static let registry: PluginRegistry = {
        var registry = PluginRegistry()
        // Sources
        registry.register(source: TimerSource.self)
        registry.register(source: WebhookSource.self)
        registry.register(source: RedisSource.self)
        registry.register(source: RedisStreamSource.self)
        registry.rename("redis-stream", to: RedisStreamSource.typeName)
        registry.register(source: PostgresSource.self)
        // Encoders
        registry.register(encoder: JSONEncoderPlugin.self)
        registry.register(encoder: MessagePackEncoderPlugin.self)
        // Filters
        registry.register(filter: APIKeyFilter.self)
        registry.register(filter: JWTFilter.self)
        registry.register(filter: OriginFilter.self)
        registry.register(filter: RateLimitFilter.self)
        return registry
    }()
}
