import SwitchboardKernel

/// `deflate-offer`: the bytes as `Sec-WebSocket-Extensions` request headers (one value per
/// line), negotiated against an endpoint policy.
///
/// Layout: byte 0 picks the policy (bit 0: dedicated mode, bits 1–3 and 4–6: server and
/// client window bits, 9–15); the rest, decoded as UTF-8, holds the header values.
///
/// Invariants: offers have non-empty names; an agreement stays within the policy and RFC
/// 7692's window range; our response header, offered back to us, yields the same agreement.
func fuzzDeflateOffer(_ input: UnsafeRawBufferPointer) {
    guard let control = input.first else { return }
    let policy = PerMessageDeflate.Policy(
        mode: control & 0x01 != 0 ? .dedicated : .shared,
        serverWindowBits: 9 + Int((control >> 1) & 0x07) % 7,
        clientWindowBits: 9 + Int((control >> 4) & 0x07) % 7
    )
    let text = String(decoding: UnsafeRawBufferPointer(rebasing: input[1...]), as: UTF8.self)
    let headerValues = text.split(separator: "\n", omittingEmptySubsequences: false).map { String($0) }
    let offers = PerMessageDeflate.parseOffers(headerValues)
    for offer in offers {
        invariant(!offer.name.isEmpty, "an offer without a name")
    }
    guard let agreement = PerMessageDeflate.negotiate(offers: offers, policy: policy) else { return }

    invariant((9...policy.serverWindowBits).contains(agreement.serverWindowBits), "server window \(agreement.serverWindowBits) outside 9...\(policy.serverWindowBits)")
    invariant((9...15).contains(agreement.clientWindowBits), "client window \(agreement.clientWindowBits) outside 9...15")
    invariant(agreement.serverNoContextTakeover == (agreement.mode == .shared), "shared mode and server_no_context_takeover disagree")
    invariant(policy.mode == .dedicated || agreement.mode == .shared, "a shared-only endpoint agreed to dedicated mode")
    invariant(agreement.responseHeader.hasPrefix("permessage-deflate"), "response header \(agreement.responseHeader)")

    let echoed = PerMessageDeflate.parseOffers([agreement.responseHeader])
    invariant(echoed.count == 1, "response header \(agreement.responseHeader) parses to \(echoed.count) offers")
    let again = PerMessageDeflate.negotiate(offers: echoed, policy: policy)
    invariant(again == agreement, "response \(agreement.responseHeader) offered back gives \(String(describing: again))")
}
