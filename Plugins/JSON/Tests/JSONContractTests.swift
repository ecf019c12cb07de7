import JSONPlugin
import NIOCore
import SwitchboardCore
import SwitchboardTesting
import Testing

/// The `json` encoder passes the plugin contract kit: every event shape and reply reads
/// back, client messages decode, random and mutated bytes never trap (seed printed).
@Suite struct JSONContractTests {
    @Test func passesTheEncoderContract() throws {
        try EncoderContract(
            encoder: JSONEventEncoder(),
            parse: { buffer in try JSONParser.parse(buffer.readableBytesView) },
            write: { value in
                var buffer = ByteBuffer()
                JSONWriter.write(value, into: &buffer)
                return buffer
            }
        ).verify()
    }
}
