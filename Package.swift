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
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
    ],
    targets: [
        // C edge: OpenBLAS found through pkg-config (Debian libopenblas-dev).
        .systemLibrary(name: "COpenBLAS", path: "Sources/COpenBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        // C edge: zlib's crc32 (Debian zlib1g-dev), the .dico checksum.
        .systemLibrary(name: "CZlib", path: "Sources/CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        // C edge: the protobuf-c runtime (Debian libprotobuf-c-dev), and the code protoc-c generates
        // from Formats/onnx.proto (committed; regenerated only by scripts/gen-onnx-proto.sh).
        .systemLibrary(name: "CProtobufC", path: "Sources/CProtobufC", pkgConfig: "libprotobuf-c",
                       providers: [.apt(["libprotobuf-c-dev"])]),
        .target(name: "CONNXProto", dependencies: ["CProtobufC"], path: "Sources/CONNXProto"),
        .target(name: "DicoCore"),
        .target(name: "DicoSafetensors", dependencies: ["DicoCore"]),
        .target(name: "DicoIR", dependencies: ["DicoCore"]),
        .target(name: "DicoModel", dependencies: ["DicoCore", "DicoIR", "DicoSafetensors"]),
        .target(name: "DicoQuant", dependencies: ["DicoCore"]),
        // ONNX import: the only user of the protobuf-c code.
        // DicoRuntime for HostTensor conversions; OpenBLAS for the interpreter's sgemm kernels.
        .target(name: "DicoONNX", dependencies: ["DicoCore", "DicoIR", "DicoRuntime", "COpenBLAS", "CONNXProto", "CProtobufC"]),
        .target(name: "DicoPasses", dependencies: ["DicoCore", "DicoIR", "DicoRuntime"]),
        // DicoONNX for the ONNX graph data model a generic-graph `.dico` stores (ONNXGraph.swift).
        .target(name: "DicoFormat", dependencies: ["DicoCore", "DicoIR", "DicoONNX", "CZlib"]),
        .target(name: "DicoConversion", dependencies: [
            "DicoCore", "DicoIR", "DicoModel", "DicoSafetensors", "DicoQuant", "DicoFormat", "DicoPasses", "DicoRuntime", "DicoONNX",
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        .target(name: "DicoRuntime", dependencies: ["DicoCore", "DicoIR", "COpenBLAS"],
                swiftSettings: [.unsafeFlags(["-Ounchecked"], .when(configuration: .release))]),
        // The verifier: probes, DDPM/DDIM samplers, drift metrics, Fréchet distance, reports, golden records.
        .target(name: "DicoVerify", dependencies: ["DicoCore", "DicoIR", "DicoModel", "DicoRuntime", "DicoSafetensors", "DicoConversion", "DicoONNX"]),
        .executableTarget(name: "dico-convert", dependencies: [
            "DicoCore", "DicoSafetensors", "DicoIR", "DicoModel", "DicoRuntime", "DicoFormat", "DicoQuant", "DicoConversion", "DicoPasses", "DicoVerify",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        // Shared by the test targets: fixtures folder, temporary directories, error assertion,
        // relative L2. A library in Tests/ (test targets cannot depend on each other).
        .target(name: "DicoTestSupport", dependencies: ["DicoCore"], path: "Tests/DicoTestSupport"),
        .testTarget(name: "DicoCoreTests", dependencies: ["DicoCore"]),
        .testTarget(name: "DicoSafetensorsTests", dependencies: ["DicoTestSupport", "DicoSafetensors", "DicoCore"]),
        .testTarget(name: "DicoIRTests", dependencies: ["DicoIR", "DicoCore"]),
        .testTarget(name: "DicoModelTests", dependencies: ["DicoModel", "DicoIR", "DicoSafetensors", "DicoCore"]),
        .testTarget(name: "DicoRuntimeTests", dependencies: ["DicoTestSupport", "DicoRuntime", "DicoModel", "DicoIR", "DicoSafetensors", "DicoCore"]),
        .testTarget(name: "DicoPassesTests", dependencies: ["DicoTestSupport", "DicoPasses", "DicoRuntime", "DicoModel", "DicoQuant", "DicoIR", "DicoCore"]),
        .testTarget(name: "DicoQuantTests", dependencies: ["DicoQuant", "DicoCore"]),
        .testTarget(name: "DicoFormatTests", dependencies: ["DicoTestSupport", "DicoFormat", "DicoONNX", "DicoConversion", "DicoPasses", "DicoSafetensors", "DicoModel", "DicoRuntime", "DicoIR", "DicoCore", "DicoQuant"]),
        // Imports CONNXProto only to build malformed models in memory (no Python needed).
        .testTarget(name: "DicoONNXTests", dependencies: ["DicoTestSupport", "DicoONNX", "DicoCore", "DicoSafetensors", "CONNXProto", "CProtobufC"]),
        .testTarget(name: "ONNXImportTests", dependencies: ["DicoTestSupport", "DicoConversion", "DicoVerify", "DicoONNX", "DicoModel", "DicoRuntime", "DicoIR", "DicoSafetensors", "DicoCore"]),
        .testTarget(name: "DicoONNXInterpreterTests", dependencies: ["DicoTestSupport", "DicoONNX", "DicoRuntime", "DicoModel", "DicoSafetensors", "DicoCore"]),
        .testTarget(name: "DicoVerifyTests", dependencies: ["DicoTestSupport", "DicoVerify", "DicoConversion", "DicoRuntime", "DicoModel", "DicoSafetensors", "DicoCore"]),
        // DicoFormat for its CRC-32 only (to damage files consistently); the tool runs as a real process.
        .testTarget(name: "CLITests", dependencies: ["DicoTestSupport", "DicoSafetensors", "DicoCore", "DicoFormat"]),
    ],
    swiftLanguageModes: [.v5]
)
