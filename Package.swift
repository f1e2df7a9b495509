// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "rte-agent",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "rte-agent", targets: ["rte-agent"]),
        .executable(name: "rte-bench", targets: ["rte-bench"]),
        .executable(name: "rtectl", targets: ["rtectl"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
    ],
    targets: [
        // C libraries, each wrapped once in Swift (GPIO/Libgpiod.swift, HTTPServer/MHD*.swift, Auth/SHA256.swift).
        .systemLibrary(name: "CGPIOD", pkgConfig: "libgpiod", providers: [.apt(["libgpiod-dev"])]),
        .systemLibrary(name: "CMicroHTTPD", pkgConfig: "libmicrohttpd", providers: [.apt(["libmicrohttpd-dev"])]),
        // SHA-256 and constant-time comparison for API tokens (Auth/SHA256.swift).
        .systemLibrary(name: "CNettle", pkgConfig: "nettle", providers: [.apt(["nettle-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),

        .target(name: "AgentClock"),
        .target(name: "Text"),
        .target(name: "CPOSIXShims"),
        .target(name: "POSIXIO", dependencies: ["CPOSIXShims"]),
        .target(name: "Configuration", dependencies: ["JSONDocument", "YAML"]),
        .target(name: "GPIO", dependencies: ["CGPIOD", "Configuration", "AgentClock"]),
        .target(name: "Serial", dependencies: ["POSIXIO", "Configuration", "AgentClock"]),
        .target(name: "Power", dependencies: ["GPIO", "Configuration", "AgentClock"]),
        .target(name: "SimulatedDUT", dependencies: ["GPIO", "POSIXIO", "Configuration"]),
        .target(name: "QEMUDUT", dependencies: ["Text", "Power", "Serial", "POSIXIO", "Configuration", "AgentClock", "JSONDocument"]),

        .systemLibrary(name: "CYAML", pkgConfig: "yaml-0.1", providers: [.apt(["libyaml-dev"])]),
        .target(name: "YAML", dependencies: ["CYAML"]),
        .target(name: "JSONDocument", dependencies: ["YAML"]),
        // Boot automation: terminal model, pattern matching, firmware UIs, the boot strategy, runs.
        .target(name: "Terminal"),
        .target(name: "Matching", dependencies: ["Terminal"]),
        .target(name: "FirmwareUI", dependencies: ["Text", "Terminal"]),
        .target(name: "BootFlow", dependencies: ["Text", "Terminal", "Matching", "FirmwareUI", "JSONDocument", "Power", "Serial", "AgentClock"]),
        .target(name: "Runs", dependencies: ["BootFlow", "Leases", "Auth", "JSONDocument", "AgentClock", "POSIXIO"]),

        .target(name: "HTTPServer", dependencies: ["CMicroHTTPD", "POSIXIO"]),
        .target(name: "Auth", dependencies: ["Text", "CNettle", "Configuration", "JSONDocument"]),
        .target(name: "Artifacts", dependencies: ["Auth", "Configuration", "HTTPServer", "JSONDocument", "POSIXIO", "AgentClock"]),
        .target(name: "Flashing", dependencies: ["CZlib", .product(name: "Logging", package: "swift-log"), "Auth", "Configuration", "GPIO", "Power", "POSIXIO", "AgentClock"]),
        .target(name: "Leases", dependencies: ["Auth", "AgentClock", "JSONDocument", "POSIXIO"]),
        .target(name: "AgentAPI", dependencies: ["Text", "Artifacts", .product(name: "Logging", package: "swift-log"), "Flashing", "HTTPServer", "JSONDocument", "Runs", "BootFlow", "Auth", "Leases", "Configuration", "GPIO", "Serial", "Power", "AgentClock", "POSIXIO"]),
        .target(name: "AgentRuntime", dependencies: ["Artifacts", "Flashing", .product(name: "Logging", package: "swift-log"), "CPOSIXShims", "AgentAPI", "Runs", "BootFlow", "QEMUDUT", "HTTPServer", "Auth", "Leases", "Configuration", "GPIO", "Serial", "Power", "SimulatedDUT", "AgentClock", "POSIXIO"]),

        .executableTarget(name: "rte-agent", dependencies: [
            "AgentRuntime", "Configuration", "AgentClock", "POSIXIO", "BootFlow", "Runs", "HTTPServer",
            .product(name: "Logging", package: "swift-log"),
        ]),

        .target(name: "AgentClient", dependencies: ["POSIXIO"]),
        .executableTarget(name: "rtectl", dependencies: [
            "AgentClient", "JSONDocument", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "rte-bench", dependencies: [
            "BootFlow", "Matching", "Terminal", "Serial", "Configuration", "POSIXIO", "AgentClock", "AgentClient", "CMicroHTTPD",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        // Children of tests (clean signal mask, deadlines) and where the built executables are.
        .target(name: "CTestShims", path: "Tests/CTestShims"),
        .target(name: "TestSupport", dependencies: ["POSIXIO", "AgentClock", "CTestShims", .product(name: "Logging", package: "swift-log")], path: "Tests/TestSupport"),
        .testTarget(name: "HardwareTests", dependencies: [
            "TestSupport",
            "Configuration", "GPIO", "Serial", "Power", "SimulatedDUT", "AgentClock", "POSIXIO", "AgentRuntime", "JSONDocument", "Flashing", "YAML",
            "QEMUDUT",
        ]),
        .testTarget(name: "BootFlowTests", dependencies: [
            "TestSupport", "Terminal", "Matching", "FirmwareUI", "BootFlow", "Runs", "Leases", "Auth", "Power", "JSONDocument", "AgentRuntime", "AgentClock",
            "Serial", "SimulatedDUT",
        ], resources: [.copy("Fixtures")]),
        .testTarget(name: "APITests", dependencies: [
            "TestSupport", .product(name: "Logging", package: "swift-log"),
            "AgentRuntime", "AgentAPI", "AgentClock", "Auth", "Configuration", "GPIO", "HTTPServer", "POSIXIO", "Terminal", "FirmwareUI",
        ]),
    ],
    swiftLanguageModes: [.v6]
)
