import ArgumentParser
import Foundation
import Logging
import SwitchboardPlugins
import SwitchboardConfig
import SwitchboardCore
import SwitchboardServer

@main
struct SwitchboardCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switchboard",
        abstract: "A real-time edge gateway: sources → topic router → WebSocket clients.",
        subcommands: [Run.self, Check.self, Plugins.self, TailCommand.self, PublishCommand.self, NewPluginCommand.self],
        defaultSubcommand: Run.self
    )
}

extension Logger.Level: @retroactive ExpressibleByArgument {}

/// `switchboard run [CONFIG] [--port N] [--host H] [--log-level L]`
struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the gateway (the built-in demo configuration when no file is given)."
    )

    @Argument(help: "Configuration file (YAML). Omit it to run the built-in default.")
    var config: String?

    @Option(help: "Port to listen on; overrides the file and SWITCHBOARD_PORT.")
    var port: Int?

    @Option(help: "Address to bind; overrides the file and SWITCHBOARD_HOST.")
    var host: String?

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: Logger.Level = .info

    func run() async throws {
        let level = logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardOutput(label: label)
            handler.logLevel = level
            return handler
        }
        var logger = Logger(label: "switchboard")
        logger.logLevel = level

        let environment = ProcessInfo.processInfo.environment
        let loader = ConfigurationLoader(registry: BuiltinPlugins.registry, environment: environment)
        let file = config
        let (port, host) = (self.port, self.host)
        if let port, !(0...65535).contains(port) { throw ValidationError("--port must be between 0 and 65535") }
        // Read at start and again on every reload (SIGHUP, POST /admin/reload), with the
        // same environment and command-line overrides.
        let read: @Sendable () throws(ConfigurationError) -> GatewayConfiguration = { () throws(ConfigurationError) -> GatewayConfiguration in
            var configuration: GatewayConfiguration
            if let file {
                configuration = try loader.load(contentsOf: file)
            } else {
                configuration = try loader.load(yaml: DefaultConfiguration.yaml, file: DefaultConfiguration.fileName)
            }
            if let value = environment["SWITCHBOARD_PORT"], !value.isEmpty {
                guard let port = Int(value), (0...65535).contains(port) else {
                    throw ConfigurationError(diagnostics: [
                        Diagnostic(file: "SWITCHBOARD_PORT", line: 1, column: 1, path: "", message: "SWITCHBOARD_PORT must be a port number, got '\(value)'")
                    ])
                }
                configuration.listener.port = port
            }
            if let value = environment["SWITCHBOARD_HOST"], !value.isEmpty { configuration.listener.host = value }
            if let port { configuration.listener.port = port }
            if let host { configuration.listener.host = host }
            return configuration
        }
        let configuration: GatewayConfiguration
        do {
            configuration = try read()
        } catch {
            FileHandle.standardError.write(Data((error.description + "\n").utf8))
            throw ExitCode(1)
        }

        logger.info("starting switchboard", metadata: ["config": .string(config ?? DefaultConfiguration.fileName)])
        let gateway = try await Gateway.make(
            configuration: configuration, registry: BuiltinPlugins.registry, logger: logger, reload: file == nil ? nil : read
        )
        try await gateway.run()
    }
}

/// `switchboard check CONFIG... [--env-file F]... [--allow-unset]`: validates files and
/// prints every error (and warning).
struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Validate configuration files; prints every error with file:line:column and exits 1 if any.",
        discussion: """
            In CI, without the secrets: --allow-unset reports each unset ${VAR} as a warning \
            (and not what follows from it), or --env-file gives the variables from a file.
            """
    )

    @Argument(help: "Configuration files to check.")
    var files: [String]

    @Option(name: .customLong("env-file"), help: "KEY=VALUE lines (# comments, optional 'export ' and quotes) used as environment variables; repeatable.")
    var envFiles: [String] = []

    @Flag(name: .customLong("allow-unset"), help: "Report unset ${VAR}s as warnings instead of errors.")
    var allowUnset = false

    func run() throws {
        var environment = ProcessInfo.processInfo.environment
        for file in envFiles {
            do {
                environment.merge(try EnvironmentFile.parse(contentsOf: file)) { $1 }
            } catch {
                print("\(file): \(error)")
                throw ExitCode(1)
            }
        }
        var loader = ConfigurationLoader(registry: BuiltinPlugins.registry, environment: environment)
        loader.allowsUnsetVariables = allowUnset
        var failed = false
        for file in files {
            let (errors, warnings) = loader.check(contentsOf: file)
            for warning in warnings { print(warning.description) }
            if errors.isEmpty {
                print("\(file): ok" + (warnings.isEmpty ? "" : " (\(warnings.count) warning\(warnings.count == 1 ? "" : "s"))"))
            } else {
                failed = true
                for error in errors { print(error.description) }
            }
        }
        if failed { throw ExitCode(1) }
    }
}

/// A `.env` file: `KEY=VALUE` per line, `#` comments, optional `export ` and quotes.
enum EnvironmentFile {
    struct ParseError: Error, CustomStringConvertible {
        let description: String
    }

    static func parse(contentsOf path: String) throws -> [String: String] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw ParseError(description: "cannot read the environment file")
        }
        return try parse(text)
    }

    static func parse(_ text: String) throws -> [String: String] {
        var values: [String: String] = [:]
        for (index, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            var line = rawLine.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            if line.hasPrefix("export ") { line = String(line.dropFirst(7)).trimmingCharacters(in: .whitespaces) }
            guard let equals = line.firstIndex(of: "=") else {
                throw ParseError(description: "line \(index + 1): expected KEY=VALUE")
            }
            let key = line[..<equals].trimmingCharacters(in: .whitespaces)
            guard !key.isEmpty, key.allSatisfy({ $0 == "_" || $0.isLetter || $0.isNumber }), key.first?.isNumber == false else {
                throw ParseError(description: "line \(index + 1): '\(key)' is not a variable name")
            }
            var value = line[line.index(after: equals)...].trimmingCharacters(in: .whitespaces)
            if value.count >= 2, let first = value.first, first == "\"" || first == "'", value.last == first {
                value = String(value.dropFirst().dropLast())
            }
            values[key] = value
        }
        return values
    }
}

/// `switchboard plugins`: prints the reference of every built-in plugin (Markdown).
struct Plugins: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the built-in plugins and their configuration keys as Markdown."
    )

    func run() throws {
        print(PluginDocumentation.markdown(for: BuiltinPlugins.registry), terminator: "")
    }
}
