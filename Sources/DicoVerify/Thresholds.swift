import DicoCore

/// The gates a verification applies, each a documented default that a thresholds file or
/// `--threshold NAME=VALUE` overrides.
///
/// The defaults sit between the worst passing and the best failing measurement (BENCHMARKS.md,
/// "Verifier drift"): int8 per-channel conversions of the tiny fixture and of DiCo-S synthetic
/// weights drift by at most 0.013 (probes) and 0.010 (final latents) relative L2, 56 dB PSNR,
/// 5e-4 Fréchet ratio; a 10% scale error in the output conv drifts by 0.10 (probes), 0.075
/// (final), 39 dB, 0.036; a transposed conv1 in every block by 0.34, 0.17, 32 dB, 0.063, with
/// cosine 0.92 (cosine is blind to a pure scale error; the relative-L2 gates carry that case).
/// Each threshold leaves a factor of about 2.5 or more (relative L2), 8 dB (PSNR) or 7 (Fréchet
/// ratio) on both sides.
public struct Thresholds: Sendable, Equatable {
    /// Whether a measured value must stay at or below the threshold, or at or above it.
    public enum Direction: String, Sendable { case max, min }

    /// One threshold: its name (file key and flag name), direction and meaning.
    public struct Definition: Sendable {
        public let name: String
        public let direction: Direction
        public let defaultValue: Double
        public let meaning: String
    }

    /// Every threshold, in report order.
    public static let definitions: [Definition] = [
        Definition(name: "probe_eps_rel_l2_max", direction: .max, defaultValue: 0.035,
                   meaning: "worst probe timestep: relative L2 error of the noise prediction (channels 0-3)"),
        Definition(name: "probe_eps_cosine_min", direction: .min, defaultValue: 0.999,
                   meaning: "worst probe timestep: cosine similarity of the noise prediction"),
        Definition(name: "probe_var_rel_l2_max", direction: .max, defaultValue: 0.035,
                   meaning: "worst probe timestep: relative L2 error of the variance channels (4-7)"),
        Definition(name: "probe_var_cosine_min", direction: .min, defaultValue: 0.999,
                   meaning: "worst probe timestep: cosine similarity of the variance channels"),
        Definition(name: "trajectory_step_rel_l2_max", direction: .max, defaultValue: 0.027,
                   meaning: "largest relative L2 drift of the latents at any step of the trajectory (all samples pooled)"),
        Definition(name: "final_rel_l2_max", direction: .max, defaultValue: 0.027,
                   meaning: "relative L2 drift of the final latents (all samples pooled)"),
        Definition(name: "final_sample_rel_l2_max", direction: .max, defaultValue: 0.03,
                   meaning: "largest per-sample relative L2 drift of the final latents"),
        Definition(name: "final_psnr_min_db", direction: .min, defaultValue: 47,
                   meaning: "PSNR of the final latents in dB (peak = the original's data range)"),
        Definition(name: "frechet_ratio_max", direction: .max, defaultValue: 0.005,
                   meaning: "latent Fréchet distance original-vs-candidate divided by original-vs-original (the sampling noise floor)"),
    ]

    /// The values by name.
    public private(set) var values: [String: Double]

    /// The documented defaults.
    public init() { values = Dictionary(uniqueKeysWithValues: Thresholds.definitions.map { ($0.name, $0.defaultValue) }) }

    /// The value of threshold `name` (one of `definitions`).
    public subscript(name: String) -> Double { values[name]! }

    /// Sets one threshold.
    /// - Throws: `DicoError(.usage)` for an unknown name (listing the known ones) or a
    ///   non-finite value. `source` names where the setting came from, for the message.
    public mutating func set(_ name: String, _ value: Double, source: String) throws {
        guard values[name] != nil else {
            throw DicoError(.usage, "\(source): unknown threshold '\(name)'; known: " + Thresholds.definitions.map(\.name).joined(separator: ", "))
        }
        guard value.isFinite else { throw DicoError(.usage, "\(source): threshold '\(name)' must be a finite number") }
        values[name] = value
    }

    /// Applies a `--threshold NAME=VALUE` flag.
    /// - Throws: `DicoError(.usage)` when it is not NAME=NUMBER or the name is unknown.
    public mutating func apply(flag: String) throws {
        let parts = flag.split(separator: "=", maxSplits: 1).map(String.init)
        guard parts.count == 2, let v = Double(parts[1]) else {
            throw DicoError(.usage, "--threshold: '\(flag)' is not NAME=NUMBER")
        }
        try set(parts[0], v, source: "--threshold")
    }

    /// Applies a thresholds file: one JSON object of threshold names to numbers; names not in
    /// it keep their value.
    /// - Throws: `DicoError.io` when the file cannot be read; `DicoError.invalidInput` naming
    ///   the file when it is not such an object or names an unknown threshold.
    public mutating func apply(file path: String) throws {
        let text = try readTextFile(path)
        let json: JSONValue
        do { json = try StrictJSON.parse(text) } catch { throw DicoError.invalid(path, "not valid JSON: \(error)") }
        guard let members = json.objectMembers else { throw DicoError.invalid(path, "a thresholds file is one JSON object of names to numbers") }
        for (k, v) in members {
            guard case let .number(lit) = v, let d = Double(lit) else { throw DicoError.invalid(path, "threshold '\(k)' is not a number") }
            guard values[k] != nil else {
                throw DicoError.invalid(path, "unknown threshold '\(k)'; known: " + Thresholds.definitions.map(\.name).joined(separator: ", "))
            }
            values[k] = d
        }
    }

    /// Whether `value` passes threshold `name` (NaN never passes).
    public func passes(_ name: String, _ value: Double) -> Bool {
        let def = Thresholds.definitions.first { $0.name == name }!
        switch def.direction {
        case .max: return value <= self[name]
        case .min: return value >= self[name]
        }
    }
}

/// The whole of a small text file.
/// - Throws: `DicoError.io` naming the file.
func readTextFile(_ path: String) throws -> String {
    let f = try MappedFile(path: path)
    return String(decoding: f.bytes(offset: 0, count: f.size), as: UTF8.self)
}
