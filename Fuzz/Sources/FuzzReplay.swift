#if !SWITCHBOARD_LIBFUZZER
import Foundation

/// Runs every input named in `arguments` once through the selected target, the way
/// libFuzzer runs files given on its command line; a directory stands for the files in it.
/// Arguments starting with `-` (libFuzzer flags) are ignored; an empty directory is no error.
///
/// This is what the binary does when it was built without libFuzzer (a plain `swift build`):
/// `SWITCHBOARD_FUZZ_TARGET=json .build/release/SwitchboardFuzz Fuzz/regressions/json`
/// replays the regressions with no sanitizer toolchain at all. A crash ends the process.
func replayInputs(_ arguments: [String]) -> CInt {
    let files = FileManager.default
    let paths = arguments.filter { !$0.hasPrefix("-") }
    if paths.isEmpty {
        writeToStandardError(
            "SwitchboardFuzz was built without libFuzzer: it only replays inputs. Give files or directories, "
                + "or build for fuzzing with scripts/fuzz.sh (Docs/fuzzing.md)."
        )
        return 2
    }
    var inputs: [String] = []
    for path in paths {
        var isDirectory: ObjCBool = false
        guard files.fileExists(atPath: path, isDirectory: &isDirectory) else {
            writeToStandardError("SwitchboardFuzz: no such file or directory: \(path)")
            return 1
        }
        if isDirectory.boolValue {
            let names = (try? files.contentsOfDirectory(atPath: path)) ?? []
            for name in names.sorted() where !name.hasPrefix(".") {
                inputs.append(path.hasSuffix("/") ? path + name : path + "/" + name)
            }
        } else {
            inputs.append(path)
        }
    }
    for input in inputs {
        guard let data = files.contents(atPath: input) else {
            writeToStandardError("SwitchboardFuzz: cannot read \(input)")
            return 1
        }
        // Unbuffered, so the last line names the input when it crashes.
        writeToStandardError("Running: \(input)")
        data.withUnsafeBytes { (bytes: UnsafeRawBufferPointer) in
            selectedFuzzTarget.run(bytes)
        }
    }
    writeToStandardError("Executed \(inputs.count) inputs without a crash (\(selectedFuzzTarget.name))")
    return 0
}
#endif
