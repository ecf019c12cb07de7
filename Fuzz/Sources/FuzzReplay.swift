#if !SWITCHBOARD_LIBFUZZER
import Foundation

/// Runs every input named in `arguments` once through the selected target, the way
/// libFuzzer runs files given on its command line; a directory stands for the files in it.
/// Arguments starting with `-` (libFuzzer flags) are ignored.
///
/// This is what the binary does when it was built without libFuzzer (a plain `swift build`):
/// `SWITCHBOARD_FUZZ_TARGET=json .build/release/SwitchboardFuzz Fuzz/regressions/json`
/// replays the regressions with no sanitizer toolchain at all. A crash ends the process.
func replayInputs(_ arguments: [String]) -> CInt {
    let files = FileManager.default
    var inputs: [String] = []
    for path in arguments where !path.hasPrefix("-") {
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
    if inputs.isEmpty {
        writeToStandardError(
            "SwitchboardFuzz was built without libFuzzer: it only replays inputs. Give files or directories, "
                + "or build for fuzzing with scripts/fuzz.sh (Docs/fuzzing.md)."
        )
        return 2
    }
    for input in inputs {
        guard let data = files.contents(atPath: input) else {
            writeToStandardError("SwitchboardFuzz: cannot read \(input)")
            return 1
        }
        print("Running: \(input)")
        data.withUnsafeBytes { (bytes: UnsafeRawBufferPointer) in
            selectedFuzzTarget.run(bytes)
        }
    }
    print("Executed \(inputs.count) inputs without a crash (\(selectedFuzzTarget.name))")
    return 0
}
#endif
