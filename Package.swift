// swift-tools-version:6.1
import PackageDescription

// One settings array for every target; each flag names its proposal.
let swiftSettings: [SwiftSetting] = [
    // https://github.com/swiftlang/swift-evolution/blob/main/proposals/0335-existential-any.md
    .enableUpcomingFeature("ExistentialAny"),
    // https://github.com/swiftlang/swift-evolution/blob/main/proposals/0444-member-import-visibility.md
    .enableUpcomingFeature("MemberImportVisibility"),
]

// MARK: built-in plugins
//
// A plugin is one folder, `Plugins/<Folder>/` with `Sources/` and `Tests/`, and one line
// here naming the packages it imports besides SwitchboardCore; then one line in
// `Sources/SwitchboardPlugins/BuiltinPlugins.swift` registers it. Its test target gets the
// plugin, Core, Config (to decode its YAML), SwitchboardTesting (the contract kit and test
// servers), NIOCore and Logging.
var builtInPlugins: [(folder: String, dependencies: [Target.Dependency], testDependencies: [Target.Dependency])] {
    let nio: Target.Dependency = .product(name: "NIOCore", package: "swift-nio")
    let locks: Target.Dependency = .product(name: "NIOConcurrencyHelpers", package: "swift-nio")
    let http1: Target.Dependency = .product(name: "NIOHTTP1", package: "swift-nio")
    let logging: Target.Dependency = .product(name: "Logging", package: "swift-log")
    let httpClient: Target.Dependency = .product(name: "AsyncHTTPClient", package: "async-http-client")
    return [
        ("JSON", [nio], []),
        ("MessagePack", ["CMsgPack", nio], []),
        ("APIKey", [.product(name: "Crypto", package: "swift-crypto"), logging], []),
        ("JWT", [.product(name: "JWTKit", package: "jwt-kit"), .product(name: "CryptoExtras", package: "swift-crypto"), httpClient, nio, http1, locks, logging], []),
        ("Redis", ["SwitchboardRedis", nio, logging], ["SwitchboardRedis"]),
        ("RateLimit", [nio, locks, logging], []),
        ("Origin", [logging], []),
        ("Timer", [httpClient, nio, http1, logging], []),
        ("Webhook", [nio, logging], []),
        ("Postgres", [.product(name: "PostgresNIO", package: "postgres-nio"), nio, logging], []),
    ]
}

/// The library target `<Folder>Plugin` from `Plugins/<Folder>/Sources` and its test target
/// `<Folder>PluginTests` from `Plugins/<Folder>/Tests`.
func plugin(_ folder: String, dependencies: [Target.Dependency], testDependencies: [Target.Dependency] = []) -> [Target] {
    [
        .target(
            name: folder + "Plugin",
            dependencies: ["SwitchboardCore"] + dependencies,
            // `path:` because a top-level Plugins/ is SwiftPM's default for package plugins.
            path: "Plugins/\(folder)/Sources",
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: folder + "PluginTests",
            dependencies: [
                .target(name: folder + "Plugin"), "SwitchboardCore", "SwitchboardConfig", "SwitchboardTesting",
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "Logging", package: "swift-log"),
            ] + testDependencies,
            path: "Plugins/\(folder)/Tests",
            swiftSettings: swiftSettings
        ),
    ]
}

let package = Package(
    name: "switchboard",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "switchboard", targets: ["switchboard"]),
        .library(name: "SwitchboardCore", targets: ["SwitchboardCore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1", traits: []),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.8.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
    ],
    targets: [
        // MARK: system libraries (Debian: zlib1g-dev, libmsgpack-dev)
        .systemLibrary(name: "CZlib", path: "Sources/CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "CMsgPack", path: "Sources/CMsgPack", pkgConfig: "msgpack", providers: [.apt(["libmsgpack-dev"])]),

        // MARK: vocabulary and protocols
        .target(
            name: "SwitchboardCore",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                // NIOLockedValueBox: pthread-backed, so Thread Sanitizer sees its ordering
                // (it cannot see the futex inside Synchronization.Mutex on Linux).
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "SwitchboardConfig",
            dependencies: [
                "SwitchboardCore",
                .product(name: "Yams", package: "Yams"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "SwitchboardKernel",
            dependencies: [
                "SwitchboardCore",
                "CZlib",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "SwitchboardRedis",
            dependencies: [
                "SwitchboardCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: swiftSettings
        ),
        // The cluster bus: the only part of the server that talks to Redis.
        .target(
            name: "SwitchboardCluster",
            dependencies: [
                "SwitchboardCore",
                "SwitchboardConfig",
                "SwitchboardKernel",
                "SwitchboardRedis",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "SwitchboardServer",
            dependencies: [
                "SwitchboardCore",
                "SwitchboardCluster",
                "SwitchboardConfig",
                "SwitchboardKernel",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Logging", package: "swift-log"),
            ],
            // The dashboard and `/client.js`, compiled in (DashboardAssets.swift).
            resources: [.embedInCode("Resources/dashboard.html"), .embedInCode("Resources/client.js")],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "SwitchboardTesting",
            dependencies: [
                "SwitchboardCore",
                "SwitchboardKernel",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "switchboard",
            dependencies: [
                "SwitchboardCore",
                "SwitchboardConfig",
                "SwitchboardServer",
                "SwitchboardPlugins",
                "MessagePackPlugin",  // `tail --format msgpack` decodes with it
                "SwitchboardKernel",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                // `tail` and `publish`: a WebSocket and HTTP client on NIO.
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ],
            swiftSettings: swiftSettings
        ),

        // MARK: benchmarks
        .executableTarget(
            name: "FanOutBenchmark",
            dependencies: [
                "SwitchboardCore", "SwitchboardKernel", "JSONPlugin",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Benchmarks/FanOut",
            swiftSettings: swiftSettings
        ),

        .executableTarget(
            name: "LoadGen",
            dependencies: [
                "SwitchboardKernel",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Benchmarks/LoadGen",
            // A single-threaded tool whose state lives on one event loop: Swift 5 mode keeps
            // its top-level code simple.
            swiftSettings: [.swiftLanguageMode(.v5)]
        ),

        // Allocation budgets (Benchmarks/Allocations): a counting malloc and the scenarios.
        .target(name: "CMallocCounter", path: "Benchmarks/Allocations/CMallocCounter"),
        .executableTarget(
            name: "AllocationBudget",
            dependencies: [
                "CMallocCounter", "SwitchboardCore", "SwitchboardKernel", "SwitchboardServer", "SwitchboardTesting", "JSONPlugin",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Benchmarks/Allocations/Budget",
            swiftSettings: swiftSettings
        ),

        // MARK: fuzzing (scripts/fuzz.sh, Docs/fuzzing.md)
        .executableTarget(
            name: "SwitchboardFuzz",
            dependencies: [
                "SwitchboardCore", "SwitchboardConfig", "SwitchboardKernel", "SwitchboardRedis",
                "JSONPlugin", "MessagePackPlugin", "WebhookPlugin",
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Fuzz/Sources",
            swiftSettings: swiftSettings
        ),

        // MARK: plugins: one folder each (see `builtInPlugins` below), and the registry
        .target(
            name: "SwitchboardPlugins",
            dependencies: ["SwitchboardCore"] + builtInPlugins.map { .target(name: $0.folder + "Plugin") },
            swiftSettings: swiftSettings
        ),
    ] + builtInPlugins.flatMap { plugin($0.folder, dependencies: $0.dependencies, testDependencies: $0.testDependencies) } + [
        // MARK: tests
        .testTarget(
            name: "SwitchboardCoreTests",
            dependencies: [
                "SwitchboardCore", .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SwitchboardConfigTests",
            dependencies: ["SwitchboardConfig", "SwitchboardCore", "TimerPlugin", "SwitchboardPlugins"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SwitchboardKernelTests",
            dependencies: [
                "SwitchboardKernel", "SwitchboardCore", "SwitchboardTesting", "JSONPlugin",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SwitchboardServerTests",
            dependencies: [
                "SwitchboardServer", "SwitchboardKernel", "SwitchboardConfig", "SwitchboardCore", "SwitchboardTesting", "JSONPlugin",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "IntegrationTests",
            dependencies: [
                "SwitchboardServer", "SwitchboardKernel", "SwitchboardConfig", "SwitchboardCore", "SwitchboardTesting",
                "MessagePackPlugin", "SwitchboardPlugins",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ],
            swiftSettings: swiftSettings
        ),
    ]
)
