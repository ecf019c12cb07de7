import MessagePackPlugin
import NIOCore
import SwitchboardCore
import SwitchboardTesting
import Testing

/// The `msgpack` encoder passes the plugin contract kit: every event shape and reply reads
/// back, client messages decode, random and mutated bytes never trap (seed printed).
@Suite struct MessagePackContractTests {
    @Test func passesTheEncoderContract() throws {
        try EncoderContract(
            encoder: MessagePackEventEncoder(),
            parse: { buffer in try MessagePackReader.read(buffer).get() },
            write: { MessagePackWriter.buffer($0) }
        ).verify()
    }
}
