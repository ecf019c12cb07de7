import Foundation
import SwitchboardCore
import Yams

/// Signals that a problem was already recorded as a ``Diagnostic``; decoding of the
/// enclosing value stops, its siblings go on.
struct ReportedError: Error {
    /// Set by a plugin block that failed its own validation after every declared key was
    /// accounted for: the block at this (rendered) path is not "aborted", so its unknown keys
    /// are still reported.
    var keysAccountedFor: String?
}

/// One step of a key path.
enum PathComponent: Sendable {
    case key(String)
    case index(Int)
}

/// Whether the rendered path `path` is `prefix` itself or lies inside it
/// (`endpoints[0].encoders[1]` is under `endpoints[0].encoders` and `endpoints[0]`).
func isAtOrUnder(_ path: String, _ prefix: String) -> Bool {
    path == prefix || path.hasPrefix(prefix + ".") || path.hasPrefix(prefix + "[")
}

/// Renders a key path as `endpoints[0].filters[1]`.
func renderPath(_ path: [PathComponent]) -> String {
    var text = ""
    for component in path {
        switch component {
        case .key(let key): text += text.isEmpty ? key : ".\(key)"
        case .index(let index): text += "[\(index)]"
        }
    }
    return text
}

/// Which keys of one YAML mapping some decoder asked about; what is left over is unknown.
final class MappingTracker {
    let pairs: [(key: String, keyMark: Mark?, value: Node)]
    var asked: Set<String> = []
    let path: [PathComponent]
    var plugin: String?

    init(pairs: [(key: String, keyMark: Mark?, value: Node)], path: [PathComponent], plugin: String?) {
        self.pairs = pairs
        self.path = path
        self.plugin = plugin
    }
}

/// State shared by all decoders of one configuration file: diagnostics, key trackers,
/// the environment for `${VAR}` interpolation and the plugin registry.
final class DecodingSession {
    let file: String
    let environment: [String: String]
    let registry: PluginRegistry
    /// Unset `${VAR}`s are warnings (their value reads as empty) rather than errors:
    /// `switchboard check --allow-unset` validates a file in CI without its secrets.
    var allowsUnsetVariables = false
    private(set) var diagnostics: [Diagnostic] = []
    private(set) var warnings: [Diagnostic] = []
    /// Where an error was found (rendered paths): a plugin block whose own validation
    /// then fails only reports what caused it, not the consequence.
    private var troubledPaths: [String] = []
    /// Where an unset variable was read as empty (`--allow-unset`): a block's validation
    /// failure there may follow from it. Other warnings (a deprecated name) never soften an
    /// error.
    private var unsetVariablePaths: [String] = []
    /// Where a value that could not be decoded was replaced by a placeholder (or a zero) so
    /// decoding could go on: a later check of the value there would be about the
    /// placeholder (`max_message_size: lots` is not also "got 1"), so it is not reported
    /// (``hasSubstitutedValue(atOrUnder:)``).
    private var substitutedPaths: Set<String> = []
    private var trackers: [String: MappingTracker] = [:]
    private var trackerOrder: [String] = []
    private var abortedPaths: [String] = []

    init(file: String, environment: [String: String], registry: PluginRegistry) {
        self.file = file
        self.environment = environment
        self.registry = registry
    }

    func report(_ message: String, hint: String? = nil, mark: Mark?, path: [PathComponent], plugin: String?) {
        var label = renderPath(path)
        if let plugin { label += label.isEmpty ? "(\(plugin))" : " (\(plugin))" }
        let diagnostic = Diagnostic(
            file: file,
            line: mark?.line ?? 1,
            column: mark?.column ?? 1,
            path: label,
            message: message,
            hint: hint
        )
        if !diagnostics.contains(diagnostic) { diagnostics.append(diagnostic) }
        troubledPaths.append(renderPath(path))
    }

    /// Notes that the value at `path` is a stand-in after a reported error.
    func substituted(_ path: [PathComponent]) {
        substitutedPaths.insert(renderPath(path))
    }

    /// Whether a value at `path` or inside it was replaced by a stand-in: a check of that
    /// value (its range, its list's duplicates, how it compares with another key) would be
    /// about the stand-in. Structural problems (unknown, missing, duplicate keys) are
    /// reported regardless.
    func hasSubstitutedValue(atOrUnder path: [PathComponent]) -> Bool {
        guard !substitutedPaths.isEmpty else { return false }
        let prefix = renderPath(path)
        return substitutedPaths.contains { isAtOrUnder($0, prefix) }
    }

    /// Records a warning (printed by `check`, never fatal).
    func warn(_ message: String, hint: String? = nil, mark: Mark?, path: [PathComponent], plugin: String?) {
        var label = renderPath(path)
        if let plugin { label += label.isEmpty ? "(\(plugin))" : " (\(plugin))" }
        let warning = Diagnostic(file: file, line: mark?.line ?? 1, column: mark?.column ?? 1, path: label, message: "warning: " + message, hint: hint)
        if !warnings.contains(warning) { warnings.append(warning) }
    }

    /// Reports a block's own validation failure unless it follows from a problem already
    /// reported inside the block. After only warnings there (an unset variable read as
    /// empty), the failure may or may not follow from them: it becomes a warning that says
    /// the block was not fully validated, rather than vanishing.
    func reportValidationFailure(_ error: ConfigValidationError, mark: Mark?, path: [PathComponent], plugin: String?) {
        if Self.contains(troubledPaths, under: path) || hasSubstitutedValue(atOrUnder: path) { return }
        if Self.contains(unsetVariablePaths, under: path) {
            warn(
                "not fully validated: \(error.message)",
                hint: "this may follow from the unset variable reported above; check again with the variable set",
                mark: mark, path: path, plugin: plugin
            )
        } else {
            report(error.message, hint: error.hint, mark: mark, path: path, plugin: plugin)
        }
    }

    private static func contains(_ paths: [String], under path: [PathComponent]) -> Bool {
        let prefix = renderPath(path)
        return paths.contains { prefix.isEmpty || isAtOrUnder($0, prefix) }
    }

    /// The tracker for a mapping node, shared by every container opened on it.
    func tracker(for mapping: Node.Mapping, path: [PathComponent], plugin: String?) -> MappingTracker {
        let key = "\(mapping.mark?.line ?? 0):\(mapping.mark?.column ?? 0):\(renderPath(path))"
        if let existing = trackers[key] {
            // A plugin's decoder shares the mapping with the kernel-level keys (name, plugin):
            // label leftovers with the plugin.
            if existing.plugin == nil, let plugin { existing.plugin = plugin }
            return existing
        }
        let pairs = mapping.map { pair in
            (key: pair.key.scalar?.string ?? "", keyMark: pair.key.mark, value: pair.value)
        }
        let tracker = MappingTracker(pairs: pairs, path: path, plugin: plugin)
        trackers[key] = tracker
        trackerOrder.append(key)
        return tracker
    }

    /// Notes that decoding under `path` stopped early, so its unasked keys are not "unknown".
    func markAborted(_ path: [PathComponent]) {
        abortedPaths.append(renderPath(path))
    }

    /// Reports every key no decoder asked about, with a "did you mean" hint.
    func reportUnknownKeys() {
        for key in trackerOrder {
            guard let tracker = trackers[key] else { continue }
            let rendered = renderPath(tracker.path)
            if abortedPaths.contains(where: { isAtOrUnder(rendered, $0) }) {
                continue
            }
            let known = tracker.asked.sorted()
            for pair in tracker.pairs where !tracker.asked.contains(pair.key) {
                let hint: String
                if let suggestion = Suggestion.closest(to: pair.key, in: known) {
                    hint = "did you mean '\(suggestion)'?"
                } else if known.isEmpty {
                    hint = "this mapping takes no keys"
                } else {
                    hint = "expected one of: \(known.joined(separator: ", "))"
                }
                report("unknown key '\(pair.key)'", hint: hint, mark: pair.keyMark, path: tracker.path, plugin: tracker.plugin)
            }
        }
    }

    /// The keys asked for in each mapping nested under the root, by path with list
    /// indices written `[]` (`keys[]`, `claims`), merged over the entries of a list.
    func nestedAskedKeys() -> [String: Set<String>] {
        var result: [String: Set<String>] = [:]
        for key in trackerOrder {
            guard let tracker = trackers[key], !tracker.path.isEmpty else { continue }
            let generic = tracker.path.map { component -> PathComponent in
                if case .index = component { return .key("[]") }
                return component
            }
            let name = renderPath(generic).replacingOccurrences(of: ".[]", with: "[]")
            result[name, default: []].formUnion(tracker.asked)
        }
        return result
    }

    /// Diagnostics sorted by position.
    var sortedDiagnostics: [Diagnostic] {
        diagnostics.sorted { ($0.line, $0.column) < ($1.line, $1.column) }
    }

    // MARK: scalars

    /// The scalar's text with `${VAR}` and `${VAR:-default}` replaced; `nil` after reporting.
    func scalarText(_ node: Node, path: [PathComponent], plugin: String?, expected: String) -> String? {
        guard case .scalar(let scalar) = node else {
            report("expected \(expected), got \(describe(node))", mark: node.mark, path: path, plugin: plugin)
            substituted(path)
            return nil
        }
        switch Interpolation.expand(scalar.string, environment: environment) {
        case .success(let text): return text
        case .failure(let error) where allowsUnsetVariables && error.message.hasPrefix("environment variable '") && error.message.hasSuffix("' is not set"):
            warn(error.message, hint: error.hint, mark: scalar.mark, path: path, plugin: plugin)
            unsetVariablePaths.append(renderPath(path))
            return nil
        case .failure(let error):
            report(error.message, hint: error.hint, mark: scalar.mark, path: path, plugin: plugin)
            substituted(path)
            return nil
        }
    }

    func describe(_ node: Node) -> String {
        switch node {
        case .scalar(let scalar): return "'\(scalar.string)'"
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .alias: return "an alias"
        }
    }

    /// Whether a node is YAML null (`~`, `null`, or nothing).
    static func isNull(_ node: Node) -> Bool {
        guard case .scalar(let scalar) = node, scalar.style == .plain else { return false }
        return ["", "~", "null", "Null", "NULL"].contains(scalar.string)
    }
}

/// `${VAR}` / `${VAR:-default}` expansion; `$${` writes a literal `${`.
enum Interpolation {
    static func expand(_ text: String, environment: [String: String]) -> Result<String, ConfigValidationError> {
        guard text.contains("$") else { return .success(text) }
        var output = ""
        var rest = Substring(text)
        while let dollar = rest.firstIndex(of: "$") {
            output += rest[..<dollar]
            let afterDollar = rest[rest.index(after: dollar)...]
            if afterDollar.hasPrefix("${") {
                output += "${"
                rest = afterDollar.dropFirst(2)
                continue
            }
            guard afterDollar.hasPrefix("{") else {
                output += "$"
                rest = afterDollar
                continue
            }
            guard let close = afterDollar.firstIndex(of: "}") else {
                return .failure(.init("unterminated '${' in '\(text)'", hint: "write ${NAME} or ${NAME:-default}"))
            }
            let inner = afterDollar[afterDollar.index(after: afterDollar.startIndex)..<close]
            let name: Substring
            var fallback: Substring?
            if let separator = inner.range(of: ":-") {
                name = inner[..<separator.lowerBound]
                fallback = inner[separator.upperBound...]
            } else {
                name = inner
            }
            guard isValidName(name) else {
                return .failure(.init("invalid environment variable name '\(name)'", hint: "names are letters, digits and '_', not starting with a digit"))
            }
            if let value = environment[String(name)], !(value.isEmpty && fallback != nil) {
                output += value
            } else if let fallback {
                output += fallback
            } else {
                return .failure(.init("environment variable '\(name)' is not set", hint: "set it, or give a default with ${\(name):-value}"))
            }
            rest = afterDollar[afterDollar.index(after: close)...]
        }
        output += rest
        return .success(output)
    }

    private static func isValidName(_ name: Substring) -> Bool {
        guard let first = name.unicodeScalars.first, first == "_" || (first.properties.isAlphabetic && first.isASCII) else {
            return false
        }
        return name.unicodeScalars.allSatisfy { $0.isASCII && ($0 == "_" || $0.properties.isAlphabetic || ("0"..."9").contains($0)) }
    }
}

extension DecodingSession {
    /// A canonical text of `node` with `${VAR}` expanded: two blocks with the same
    /// fingerprint configure the same thing (key order and comments aside). A hot reload
    /// keeps whatever did not change by this measure, so it errs towards "changed": a
    /// scalar's resolved type counts (`null` is not `"null"`, quoting a string is not a
    /// change), and a
    /// key named `file` or ending in `_file` adds a digest of the file it names (API key
    /// lists, JWKS, PEM keys), so that editing only that file still counts as a change.
    /// Keys in `excluding` (top level only) are left out.
    func fingerprint(of node: Node, excluding: Set<String> = []) -> String {
        var output = ""
        appendFingerprint(of: node, excluding: excluding, to: &output)
        return output
    }

    private func appendFingerprint(of node: Node, excluding: Set<String>, to output: inout String) {
        switch node {
        case .scalar(let scalar):
            let text = (try? Interpolation.expand(scalar.string, environment: environment).get()) ?? scalar.string
            // The resolved tag: `5` (int) and `"5"` (str) differ, `/ws` and `"/ws"` do not.
            let tag = Resolver.default.resolveTag(of: node).rawValue
            if tag != Tag.Name.str.rawValue { output += "!" + Self.quoted(tag) }
            output += Self.quoted(text)
        case .mapping(let mapping):
            let entries = mapping.compactMap { entry -> (String, Node)? in
                let key = entry.key.scalar?.string ?? "\(entry.key)"
                return excluding.contains(key) ? nil : (key, entry.value)
            }.sorted { $0.0 < $1.0 }
            output += "{"
            for (key, value) in entries {
                output += Self.quoted(key) + ":"
                appendFingerprint(of: value, excluding: [], to: &output)
                if key == "file" || key.hasSuffix("_file"), case .scalar(let scalar) = value {
                    let path = (try? Interpolation.expand(scalar.string, environment: environment).get()) ?? scalar.string
                    output += "#" + Self.fileDigest(path)
                }
                output += ","
            }
            output += "}"
        case .sequence(let sequence):
            output += "["
            for element in sequence {
                appendFingerprint(of: element, excluding: [], to: &output)
                output += ","
            }
            output += "]"
        case .alias:
            output += "*"
        }
    }

    private static func quoted(_ text: String) -> String {
        "\"" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
    }

    /// FNV-1a (64 bits) of the file's bytes and its size; "unreadable" when it cannot be
    /// read (the plugin then reports why).
    static func fileDigest(_ path: String) -> String {
        guard let data = FileManager.default.contents(atPath: path) else { return "unreadable" }
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in data {
            hash ^= UInt64(byte)
            hash &*= 0x0000_0100_0000_01b3
        }
        return "\(data.count):\(String(hash, radix: 16))"
    }
}
