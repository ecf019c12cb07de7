import JSONPlugin
import NIOCore
import SwitchboardCore
import SwitchboardTesting
import Testing

/// The `json` encoder passes the plugin contract kit: every event shape and reply reads
/// back, client messages decode, random and mutated bytes never trap (seed printed).
@Suite struct JSONContractTests {
    @Test func passesTheEncoderContract() throws {
        try EncoderContract.json(JSONEventEncoder()).verify()
    }
}
