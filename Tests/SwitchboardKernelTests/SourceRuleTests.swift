import Foundation
import Testing

/// Rules about our own sources that the compiler does not check.
@Suite struct SourceRuleTests {
    /// A closure kept as a lock's value is re-wrapped in a reabstraction thunk on every
    /// `withLockedValue { $0 }` (the value is handed to the body `inout`, converted and
    /// written back), so each read makes the next call deeper: an unbounded slowdown and a
    /// leak. Keep such functions in a class (`LatencyObserver`).
    /// A line check: it catches the plain spelling (`NIOLockedValueBox<(@Sendable …) -> …>`),
    /// not a function typealias or a generic spread over lines; arrays and dictionaries of
    /// closures are fine (their elements are not handed out `inout`).
    @Test func noClosureIsALocksValue() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let pattern = try Regex(#"(NIOLockedValueBox|Mutex|NIOLoopBoundBox|LockedValueBox)<\(?[^>\[\n]*->"#)
        var checked = 0
        var offenders: [String] = []
        for folder in ["Sources", "Plugins"] {
            let enumerator = FileManager.default.enumerator(at: root.appendingPathComponent(folder), includingPropertiesForKeys: nil)
            while let file = enumerator?.nextObject() as? URL {
                guard file.pathExtension == "swift" else { continue }
                let text = try String(contentsOf: file, encoding: .utf8)
                checked += 1
                for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated()
                where line.contains(pattern) && !line.trimmingCharacters(in: .whitespaces).hasPrefix("//") {
                    offenders.append("\(file.path.dropFirst(root.path.count + 1)):\(number + 1): \(line.trimmingCharacters(in: .whitespaces))")
                }
            }
        }
        #expect(checked > 100, "the source folders were found (\(checked) files)")
        #expect(offenders.isEmpty, "closures kept as a lock's value:\n\(offenders.joined(separator: "\n"))")
        #expect("    let box = NIOLockedValueBox<(@Sendable (Int64) -> Void)?>(nil)".contains(pattern), "the rule matches what it forbids")
    }
}
