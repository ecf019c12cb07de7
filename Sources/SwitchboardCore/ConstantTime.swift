/// Comparisons of secrets (keys, digests) whose time does not depend on where the first
/// difference is, so timing tells an attacker nothing about how much of a guess was right.
public enum ConstantTime {
    /// Whether `a` and `b` hold the same bytes. Always walks the longer of the two.
    public static func equal(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        var difference = UInt8(a.count == b.count ? 0 : 1)
        for index in 0..<max(a.count, b.count) {
            difference |= (index < a.count ? a[index] : 0) ^ (index < b.count ? b[index] : 0)
        }
        return difference == 0
    }
}
