#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// SplitMix64: a small, fast, seeded generator, so that anything random — a test's inputs,
/// a soak run's mix — can be replayed from its seed.
///
/// ```swift
/// var random = SeededRandom.forTest("neverTrapsOnRandomBytes")   // prints the seed
/// let byte = UInt8.random(in: 0...255, using: &random)
/// ```
public struct SeededRandom: RandomNumberGenerator, Sendable {
    public let seed: UInt64
    private var state: UInt64

    public init(seed: UInt64) {
        self.seed = seed
        self.state = seed
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A generator for a random-input test: seeded from `SWITCHBOARD_TEST_SEED` when set
    /// (to replay a failure), otherwise from the system; the seed is printed with the test's
    /// name so a failing run can be repeated exactly.
    public static func forTest(_ name: String) -> SeededRandom {
        let seed = getenv("SWITCHBOARD_TEST_SEED").flatMap { UInt64(String(cString: $0)) } ?? UInt64.random(in: 0...UInt64.max)
        print("\(name): seed \(seed) (replay with SWITCHBOARD_TEST_SEED=\(seed))")
        return SeededRandom(seed: seed)
    }
}
