import JSONPlugin
import SwitchboardConfig
import SwitchboardCore
import WebhookPlugin

/// `config`: the bytes (decoded as UTF-8, invalid sequences replaced) as a configuration file.
///
/// The registry holds only the `json` encoder and the `webhook` source: the other plugins
/// would pull AsyncHTTPClient, JWTKit and Hummingbird into the fuzz build. Configurations
/// naming them still exercise the loader (unknown plugin diagnostics).
///
/// Invariants: a refusal always carries diagnostics, each naming the file, sorted by
/// position. Thrown errors are answers; only traps and hangs are bugs.
func fuzzConfig(_ input: UnsafeRawBufferPointer) {
    let yaml = String(decoding: input, as: UTF8.self)
    do {
        _ = try configurationLoader.load(yaml: yaml, file: "fuzz.yaml")
    } catch {
        let diagnostics = error.diagnostics
        invariant(!diagnostics.isEmpty, "a ConfigurationError without diagnostics")
        for diagnostic in diagnostics {
            invariant(diagnostic.file == "fuzz.yaml", "diagnostic for file '\(diagnostic.file)': \(diagnostic)")
        }
        for (earlier, later) in zip(diagnostics, diagnostics.dropFirst()) {
            invariant(
                (earlier.line, earlier.column) <= (later.line, later.column),
                "diagnostics out of order: \(earlier) before \(later)"
            )
        }
        _ = error.description
    }
}

/// Built once: the registry and a fixed environment (the variables the example configs use),
/// so a run does not depend on the shell it started in.
private let configurationLoader: ConfigurationLoader = {
    var registry = PluginRegistry()
    registry.register(source: WebhookSource.self)
    registry.register(encoder: JSONEncoderPlugin.self)
    return ConfigurationLoader(
        registry: registry,
        environment: [
            "SWITCHBOARD_HOST": "127.0.0.1",
            "SWITCHBOARD_PORT": "8080",
            "SWITCHBOARD_PUBLISH_KEY": "fuzz-publish-key",
            "HELIOS_EVENTS_KEY": "fuzz-events-key",
            "HELIOS_JWT_SECRET": "fuzz-jwt-secret",
            "TAKHIN_EVENTS_KEY": "fuzz-events-key",
            "REDIS_URL": "redis://127.0.0.1:6379",
            "EMPTY": "",
        ]
    )
}()
