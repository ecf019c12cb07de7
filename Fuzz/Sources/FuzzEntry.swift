#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

// One binary, one target per run: `SWITCHBOARD_FUZZ_TARGET` picks the parser. One binary
// keeps the build to a single sanitizer-instrumented link of the whole graph (slow on two
// cores); `scripts/fuzz.sh` and Docs/fuzzing.md explain how to run it.
//
// Two builds of this module:
// - `-DSWITCHBOARD_LIBFUZZER` with `-sanitize=fuzzer,address` (scripts/fuzz.sh): libFuzzer
//   drives `fuzzOne`.
// - a plain `swift build` (scripts/test.sh builds every product): no libFuzzer, and the binary
//   runs the files named on its command line once each, so regressions replay anywhere.

/// libFuzzer's entry point: runs one input through the target named by
/// `SWITCHBOARD_FUZZ_TARGET`.
///
/// libFuzzer always passes a valid pointer (it copies every input into its own buffer, also
/// when `size` is 0).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    selectedFuzzTarget.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

/// libFuzzer calls this once before the first input: an unknown target stops the process
/// here, before libFuzzer runs an input (an `exit` inside `LLVMFuzzerTestOneInput` would be
/// reported as a crash and leave a bogus artifact).
@_cdecl("LLVMFuzzerInitialize")
public func fuzzInitialize(
    _ argc: UnsafeMutablePointer<CInt>?,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?
) -> CInt {
    _ = selectedFuzzTarget
    return 0
}

#if SWITCHBOARD_LIBFUZZER
/// libFuzzer's driver (`libclang_rt.fuzzer`): parses the libFuzzer flags and fuzzes.
@_silgen_name("LLVMFuzzerRunDriver")
func runLibFuzzerDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>, Int) -> CInt
) -> CInt
#endif

/// The process entry point, under the name SwiftPM gives it.
///
/// SwiftPM (tools version ≥ 5.5, Linux) compiles an executable module with
/// `-entry-point-function-name SwitchboardFuzz_main` and links it with
/// `--defsym main=SwitchboardFuzz_main`. This module has no `main.swift` and no `@main`, so
/// without this function the link fails with an undefined `SwitchboardFuzz_main`; and as
/// the defsym'd `main` wins over the one in `libclang_rt.fuzzer.a`, this function starts
/// libFuzzer itself.
@_cdecl("SwitchboardFuzz_main")
public func switchboardFuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    _ = selectedFuzzTarget
    #if SWITCHBOARD_LIBFUZZER
    var count = argc
    var vector = argv
    return runLibFuzzerDriver(&count, &vector, fuzzOne)
    #else
    var arguments: [String] = []
    if let argv {
        for index in stride(from: 1, to: Int(argc), by: 1) {
            if let argument = argv[index] { arguments.append(String(cString: argument)) }
        }
    }
    return replayInputs(arguments)
    #endif
}

/// Writes one line to standard error (`stderr` itself is shared mutable state to Swift 6).
func writeToStandardError(_ message: String) {
    var line = message + "\n"
    line.withUTF8 { bytes in
        _ = write(2, bytes.baseAddress, bytes.count)
    }
}
