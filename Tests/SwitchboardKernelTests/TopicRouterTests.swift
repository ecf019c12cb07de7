import SwitchboardCore
import SwitchboardKernel
import Testing

final class Sub {
    let name: String
    init(_ name: String) { self.name = name }
}

@Suite struct TopicRouterTests {
    func pattern(_ text: String) -> TopicPattern { TopicPattern(text)! }

    func matches(_ router: TopicRouter<Sub>, _ topic: String) -> [String] {
        var names: [String] = []
        router.forEachMatch(topic) { names.append($0.name) }
        return names.sorted()
    }

    @Test func exactTopics() {
        var router = TopicRouter<Sub>()
        let a = Sub("a"), b = Sub("b")
        let changed1 = router.subscribe(pattern("metrics"), a)
        #expect(changed1)
        let changed2 = router.subscribe(pattern("metrics"), b)
        #expect(changed2)
        let changed3 = router.subscribe(pattern("metrics"), a)
        #expect(!changed3)
        #expect(matches(router, "metrics") == ["a", "b"])
        #expect(matches(router, "metric").isEmpty)
        #expect(router.subscriptionCount == 2)
    }

    @Test func trailingWildcards() {
        var router = TopicRouter<Sub>()
        let all = Sub("all"), topics = Sub("topics"), exact = Sub("exact"), deep = Sub("deep")
        router.subscribe(pattern("*"), all)
        router.subscribe(pattern("topic:*"), topics)
        router.subscribe(pattern("topic:orders"), exact)
        router.subscribe(pattern("topic:orders:*"), deep)
        #expect(matches(router, "topic:orders") == ["all", "exact", "topics"])
        #expect(matches(router, "topic:orders:eu") == ["all", "deep", "topics"])
        #expect(matches(router, "group:x") == ["all"])
        #expect(matches(router, "topic:") == ["all", "topics"])
        #expect(matches(router, "topicx") == ["all"])
    }

    @Test func unicodeTopicsDoNotSplitCharacters() {
        var router = TopicRouter<Sub>()
        let s = Sub("s")
        router.subscribe(pattern("é*"), s)
        #expect(matches(router, "éa") == ["s"])
        #expect(matches(router, "e") == [])
        #expect(matches(router, "ée") == ["s"])
    }

    @Test func unsubscribeRemovesOnlyThatPattern() {
        var router = TopicRouter<Sub>()
        let a = Sub("a"), b = Sub("b"), c = Sub("c")
        router.subscribe(pattern("t:*"), a)
        router.subscribe(pattern("t:*"), b)
        router.subscribe(pattern("t:*"), c)
        router.subscribe(pattern("t:1"), a)
        let changed4 = router.unsubscribe(pattern("t:*"), b)
        #expect(changed4)
        let changed5 = router.unsubscribe(pattern("t:*"), b)
        #expect(!changed5)
        #expect(matches(router, "t:1") == ["a", "a", "c"])
        let changed6 = router.unsubscribe(pattern("t:*"), a)
        #expect(changed6)
        let changed7 = router.unsubscribe(pattern("t:*"), c)
        #expect(changed7)
        #expect(matches(router, "t:1") == ["a"])
        #expect(matches(router, "t:2") == [])
        #expect(router.countsByPattern == ["t:1": 1])
        #expect(router.subscriptionCount == 1)
    }

    @Test func manySubscribersSwapRemoveKeepsTheRest() {
        var router = TopicRouter<Sub>()
        let subs = (0..<500).map { Sub("\($0)") }
        for s in subs { router.subscribe(pattern("x"), s) }
        for (i, s) in subs.enumerated() where i % 2 == 0 { router.unsubscribe(pattern("x"), s) }
        #expect(matches(router, "x") == subs.enumerated().filter { $0.offset % 2 == 1 }.map(\.element.name).sorted())
    }
}
