import Logging
import RateLimitPlugin
import SwitchboardConfig
import SwitchboardCore
import Testing

@Suite struct TokenBucketTests {
    let second: Int64 = 1_000_000_000

    @Test func burstThenRate() {
        var bucket = TokenBucket(rate: 2, burst: 3, now: 0)
        let taken = (0..<4).map { _ in bucket.take(now: 0) }
        #expect(taken == [true, true, true, false])
        let retry = bucket.retryAfter(now: 0)
        #expect(retry == 1)
        let early = bucket.take(now: second / 4)
        let onTime = bucket.take(now: second / 2)
        #expect(!early && onTime)
        let idleSoon = bucket.isIdle(now: second)
        let idleLater = bucket.isIdle(now: 3 * second)
        #expect(!idleSoon && idleLater)
    }
}

@Suite struct IPAddressRangeTests {
    @Test func ranges() throws {
        let ten = try #require(IPAddressRange("10.0.0.0/8"))
        #expect(ten.contains("10.1.2.3"))
        #expect(!ten.contains("11.0.0.1"))
        #expect(!ten.contains("::ffff:10.1.2.3"))
        let loopback6 = try #require(IPAddressRange("::1"))
        #expect(loopback6.contains("::1"))
        #expect(!loopback6.contains("::2"))
        let odd = try #require(IPAddressRange("192.168.1.128/25"))
        #expect(odd.contains("192.168.1.200"))
        #expect(!odd.contains("192.168.1.100"))
        #expect(IPAddressRange("10.0.0.0/33") == nil)
        #expect(IPAddressRange("example.com") == nil)
    }
}

@Suite struct RateLimitFilterTests {
    func filter(_ yaml: String) async throws -> any Filter {
        let config = try ConfigurationLoader.decodePluginConfig(RateLimitFilter.Config.self, yaml: yaml, plugin: "rate_limit")
        return try await RateLimitFilter.build(config: config, context: FilterContext(endpointPath: "/ws", logger: Logger(label: "test")))
    }

    func request(_ remote: String, forwarded: String? = nil) -> UpgradeRequest {
        UpgradeRequest(path: "/ws", query: [], headers: forwarded.map { [("X-Forwarded-For", $0)] } ?? [], remoteAddress: remote)
    }

    @Test func connectionAttemptsPerIP() async throws {
        let limiter = try await filter("connect_rate: 1\nconnect_burst: 3")
        for _ in 0..<3 { #expect(await limiter.admit(request("10.0.0.1"), principal: nil) == .admit(nil)) }
        #expect(await limiter.admit(request("10.0.0.1"), principal: nil) == .deny(status: 429, reason: "too many connection attempts", retryAfter: 1))
        // Another address has its own bucket.
        #expect(await limiter.admit(request("10.0.0.2"), principal: nil) == .admit(nil))
    }

    @Test func forwardedForIsBelievedOnlyFromTrustedProxies() async throws {
        let limiter = try await filter("connect_rate: 1\nconnect_burst: 1\ntrusted_proxies: [\"127.0.0.1/32\"]")
        #expect(await limiter.admit(request("127.0.0.1", forwarded: "203.0.113.7"), principal: nil) == .admit(nil))
        #expect(await limiter.admit(request("127.0.0.1", forwarded: "203.0.113.8"), principal: nil) == .admit(nil))
        // Same client behind the proxy: limited.
        guard case .deny(429, _, _) = await limiter.admit(request("127.0.0.1", forwarded: "203.0.113.7"), principal: nil) else {
            Issue.record("expected 429")
            return
        }
        // An untrusted peer cannot pick its address with the header.
        #expect(await limiter.admit(request("198.51.100.1", forwarded: "203.0.113.99"), principal: nil) == .admit(nil))
        guard case .deny(429, _, _) = await limiter.admit(request("198.51.100.1", forwarded: "203.0.113.100"), principal: nil) else {
            Issue.record("expected 429 for the real peer")
            return
        }
    }

    @Test func concurrentConnectionsAreReservedAndReleased() async throws {
        let limiter = try await filter("max_connections_per_ip: 2\nmax_connections: 3")
        var guards: [any ConnectionGuard] = []
        for address in ["10.0.0.1", "10.0.0.1"] {
            guard case .guarded(let guardian) = limiter.attach(request(address), principal: nil) else {
                Issue.record("expected a guard")
                return
            }
            guards.append(guardian)
        }
        guard case .deny(429, _, let retry) = limiter.attach(request("10.0.0.1"), principal: nil) else {
            Issue.record("expected 429")
            return
        }
        #expect(retry != nil)
        guard case .guarded(let third) = limiter.attach(request("10.0.0.2"), principal: nil) else {
            Issue.record("expected a guard")
            return
        }
        guard case .deny(503, _, _) = limiter.attach(request("10.0.0.3"), principal: nil) else {
            Issue.record("expected 503")
            return
        }
        guards[0].connectionClosed()
        guards[0].connectionClosed()  // idempotent
        guard case .guarded = limiter.attach(request("10.0.0.1"), principal: nil) else {
            Issue.record("the slot should be free again")
            return
        }
        third.connectionClosed()
    }

    @Test func messageFloodsAreRejectedThenClosed() async throws {
        let limiter = try await filter("message_rate: 1\nmessage_burst: 2\nmax_violations: 3")
        guard case .guarded(let guardian) = limiter.attach(request("10.0.0.1"), principal: nil) else {
            Issue.record("expected a guard")
            return
        }
        let now: Int64 = Int64(1) << 50
        #expect(guardian.messageReceived(now: now) == .accept)
        #expect(guardian.messageReceived(now: now) == .accept)
        #expect(guardian.messageReceived(now: now) == .reject(code: "rate_limited", message: "more than 1.0 messages per second; slow down"))
        #expect(guardian.messageReceived(now: now) != .accept)
        #expect(guardian.messageReceived(now: now) == .close(code: 1008, reason: "message rate exceeded"))
    }

    @Test func observeModeLimitsNothing() async throws {
        let limiter = try await filter("connect_rate: 1\nconnect_burst: 1\nmessage_rate: 1\nmessage_burst: 1\nmode: observe")
        for _ in 0..<5 { #expect(await limiter.admit(request("10.0.0.1"), principal: nil) == .admit(nil)) }
        guard case .guarded(let guardian) = limiter.attach(request("10.0.0.1"), principal: nil) else {
            Issue.record("expected a guard")
            return
        }
        for _ in 0..<20 { #expect(guardian.messageReceived(now: 0) == .accept) }
    }

    @Test(arguments: ["mode: observe", "connect_rate: 0", "connect_rate: 1\nconnect_burst: 0", "message_rate: 1\ntrusted_proxies: [\"10.0.0/8\"]", "message_rate: 1\nmax_violations: 0"])
    func configErrors(yaml: String) {
        #expect(throws: ConfigurationError.self) {
            try ConfigurationLoader.decodePluginConfig(RateLimitFilter.Config.self, yaml: yaml, plugin: "rate_limit")
        }
    }
}
