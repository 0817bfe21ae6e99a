// swift-tools-version:6.0
// dico-convert: import DiCo diffusion-model weights, optimize, quantize, write `.dico`, verify.
// Targets are split by concern; dependencies point down (see README "Architecture").
import PackageDescription

let package = Package(
    name: "dico-convert",
    products: [
        .executable(name: "dico-convert", targets: ["dico-convert"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        // C edge: OpenBLAS found through pkg-config (Debian libopenblas-dev).
        .systemLibrary(name: "COpenBLAS", path: "Sources/COpenBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .target(name: "DicoCore"),
        .target(name: "DicoSafetensors", dependencies: ["DicoCore"]),
        .target(name: "DicoIR", dependencies: ["DicoCore"]),
        .target(name: "DicoModel", dependencies: ["DicoCore", "DicoIR", "DicoSafetensors"]),
        .target(name: "DicoRuntime", dependencies: ["DicoCore", "DicoIR", "COpenBLAS"],
                swiftSettings: [.unsafeFlags(["-Ounchecked"], .when(configuration: .release))]),
        .executableTarget(name: "dico-convert", dependencies: [
            "DicoCore", "DicoSafetensors", "DicoIR", "DicoModel", "DicoRuntime",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .testTarget(name: "DicoCoreTests", dependencies: ["DicoCore"]),
        .testTarget(name: "DicoSafetensorsTests", dependencies: ["DicoSafetensors", "DicoCore"]),
        .testTarget(name: "DicoIRTests", dependencies: ["DicoIR", "DicoCore"]),
        .testTarget(name: "DicoModelTests", dependencies: ["DicoModel", "DicoIR", "DicoSafetensors", "DicoCore"]),
        .testTarget(name: "DicoRuntimeTests", dependencies: ["DicoRuntime", "DicoModel", "DicoIR", "DicoSafetensors", "DicoCore"]),
        .testTarget(name: "CLITests", dependencies: ["DicoSafetensors", "DicoCore"]),
    ],
    swiftLanguageModes: [.v5]
)
