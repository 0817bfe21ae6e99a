import DicoConversion
import DicoCore
import DicoSafetensors
import DicoTestSupport
@testable import DicoVerify
import Foundation
import XCTest

/// The repository's Fixtures/ folder.
let fixtures = fixturesDirectory

func fixture(_ name: String) -> String { "\(fixtures)/\(name)" }

/// A tensor of a fixture file as Doubles (f32 or f64 storage).
func doubles(_ f: SafetensorsFile, _ name: String, file: StaticString = #filePath, line: UInt = #line) throws -> [Double] {
    let t = try XCTUnwrap(f.tensor(name), "fixture tensor \(name)", file: file, line: line)
    if t.dtype == .f64 {
        return t.bytes.withMemoryRebound(to: Double.self) { Array($0) }
    }
    return t.floats().map { Double($0) }
}

/// The JSON object stored under metadata key `key`, as name -> Double.
func expectedNumbers(_ f: SafetensorsFile, _ key: String = "expected") throws -> [String: Double] {
    let json = try StrictJSON.parse(try XCTUnwrap(f.metadata?[key]))
    var out: [String: Double] = [:]
    for (k, v) in json.objectMembers ?? [] { if case let .number(n) = v { out[k] = Double(n) } }
    return out
}

/// Settings small enough for debug-build tests on the tiny fixture: 3 probe timesteps x 2
/// latents and 3 trajectories of 5 DDPM steps, all at 8x8.
func tinySettings(kind: SamplerKind = .ddpm, cfg: Double = 1.4) -> VerifySettings {
    VerifySettings(mode: "test", probes: ProbeSettings(timesteps: 3, batch: 2, size: 8, seed: 3),
                   sampler: SamplerSettings(kind: kind, respacing: .even(5), guidance: Guidance(scale: cfg), samples: 3, size: 8, seed: 5))
}

/// A copy of the safetensors model `src` with some float32 tensors edited (a seeded corruption).
func corruptedCopy(of src: String, to dst: String, edit: (String, [Int], inout [Float]) -> Void) throws {
    let f = try SafetensorsFile(path: src)
    let tensors: [(name: String, data: TensorData)] = f.tensors.map { info in
        let t = f.tensor(info.name)!
        var v = t.floats()
        edit(info.name, t.shape, &v)
        return (info.name, TensorData(shape: t.shape, floats: v))
    }
    try SafetensorsWriter.write(tensors, metadata: f.metadata, to: dst, overwrite: false)
}

/// The two corruptions the default thresholds must catch: a 10% scale error in the output
/// conv (weight and bias), and every block's conv1 weight [D, D, 1, 1] transposed.
enum Corruption: CaseIterable {
    case outputScale, transposeConv1

    func apply(_ name: String, _ shape: [Int], _ v: inout [Float]) {
        switch self {
        case .outputScale:
            if name == "final_layer.out_proj.weight" || name == "final_layer.out_proj.bias" { v = v.map { Float(Double($0) * 1.1) } }
        case .transposeConv1:
            guard name.hasSuffix(".conv1.weight") else { return }
            let d = shape[0]
            var t = v
            for o in 0..<d { for i in 0..<d { t[i * d + o] = v[o * d + i] } }
            v = t
        }
    }
}
