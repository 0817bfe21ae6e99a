#if canImport(Glibc)
import Glibc
#endif
import DicoCore
import DicoModel

/// A Double as a JSON value: its shortest round-trip literal, `null` for NaN and the
/// infinities (JSON has no literal for them; see Formats/VERIFY_REPORT.md).
func jsonNumber(_ v: Double) -> JSONValue { v.isFinite ? .number("\(v)") : .null }

extension VerifySettings {
    /// The settings as the report and the golden record write them.
    public var json: JSONValue {
        .object([
            ("mode", .string(mode)),
            ("probes", .object([
                ("timesteps", .array(probes.timestepValues.map { .integer($0) })), ("batch", .integer(probes.batch)),
                ("size", .integer(probes.size)), ("seed", .string(String(probes.seed))),
                ("labels", .string("null class first, then seeded real classes")),
            ])),
            ("sampler", .object([
                ("kind", .string(sampler.kind.rawValue)), ("steps", .string(sampler.respacing.description)),
                ("cfg_scale", jsonNumber(sampler.guidance.scale)), ("samples", .integer(sampler.samples)),
                ("size", .integer(sampler.size)), ("seed", .string(String(sampler.seed))),
                ("noise", .string("SplitMix64 + Box-Muller (Formats/VERIFY_REPORT.md)")),
            ])),
        ])
    }

    /// Reads settings written by `json`.
    /// - Throws: `DicoError.invalidInput` naming `file` and the key that is missing or wrong.
    public init(json: JSONValue, file: String) throws {
        func obj(_ v: JSONValue?, _ what: String) throws -> [(key: String, value: JSONValue)] {
            guard let m = v?.objectMembers else { throw DicoError.invalid(file, "the settings have no object '\(what)'") }
            return m
        }
        func get(_ m: [(key: String, value: JSONValue)], _ k: String) -> JSONValue? { m.first { $0.key == k }?.value }
        func int(_ m: [(key: String, value: JSONValue)], _ k: String) throws -> Int {
            guard let v = get(m, k)?.exactNonNegativeInt, v > 0, v <= 1 << 20 else { throw DicoError.invalid(file, "the settings have no positive integer '\(k)'") }
            return v
        }
        func seed(_ m: [(key: String, value: JSONValue)]) throws -> UInt64 {
            guard let s = get(m, "seed")?.stringValue, let v = UInt64(s) else { throw DicoError.invalid(file, "the settings have no seed string") }
            return v
        }
        let top = try obj(json, "settings")
        let p = try obj(get(top, "probes"), "probes"), s = try obj(get(top, "sampler"), "sampler")
        guard let times = get(p, "timesteps")?.arrayValue, !times.isEmpty else { throw DicoError.invalid(file, "the probe settings have no timesteps") }
        var probes = ProbeSettings(timesteps: times.count, batch: try int(p, "batch"), size: try int(p, "size"), seed: try seed(p))
        probes.trainingSteps = 1000
        guard probes.timestepValues.map({ JSONValue.integer($0) }) == times else {
            throw DicoError.invalid(file, "the probe timesteps are not the ones this version derives from their count")
        }
        guard let kind = get(s, "kind")?.stringValue.flatMap(SamplerKind.init(rawValue:)) else { throw DicoError.invalid(file, "the sampler kind is not ddpm or ddim") }
        guard let steps = get(s, "steps")?.stringValue, let respacing = try? Respacing(parsing: steps) else {
            throw DicoError.invalid(file, "the sampler steps are not a step count or ddimN")
        }
        guard case let .number(lit)? = get(s, "cfg_scale"), let cfg = Double(lit) else { throw DicoError.invalid(file, "the sampler has no cfg_scale") }
        guard let mode = get(top, "mode")?.stringValue else { throw DicoError.invalid(file, "the settings have no mode") }
        self.init(mode: mode, probes: probes,
                  sampler: SamplerSettings(kind: kind, respacing: respacing, guidance: Guidance(scale: cfg), samples: try int(s, "samples"),
                                           size: try int(s, "size"), seed: try seed(s)))
    }
}

extension Drift {
    var json: JSONValue {
        .object([("rel_l2", jsonNumber(relativeL2)), ("cosine", jsonNumber(cosine)), ("sqnr_db", jsonNumber(sqnrDB)), ("max_abs", jsonNumber(maxAbs))])
    }
}

extension VerifyResult {
    /// The JSON report (schema: Formats/VERIFY_REPORT.md).
    public var json: JSONValue {
        let gateList = gates
        return .object([
            ("format", .string("dico-verify-report")), ("version", .integer(1)),
            ("passed", .bool(passed)),
            ("original", original), ("candidate", candidate), ("reference", .string(golden ? "golden" : "original")),
            ("settings", settings.json),
            ("probes", .array(probes.map { p in
                .object([("timestep", .integer(p.timestep)), ("eps", p.eps.json), ("variance", p.variance.json)])
            })),
            ("trajectory", .object([
                ("steps", .array(stepDrift.map { .object([("step", .integer($0.step)), ("rel_l2", jsonNumber($0.relativeL2))]) })),
                ("final", final.json), ("final_psnr_db", jsonNumber(finalPSNR)),
                ("sample_rel_l2", .array(sampleDrift.map(jsonNumber))),
            ])),
            ("distribution", .object([
                ("metric", .string("latent-space Fréchet distance (Gaussian fit of pooled latent features; not Inception FID)")),
                ("features", .string("per latent channel: spatial mean, spatial std, four quadrant means")),
                ("frechet_original_candidate", jsonNumber(frechet)),
                ("frechet_original_original", jsonNumber(floorFrechet)),
                ("ratio", jsonNumber(frechetRatio)),
            ])),
            ("thresholds", .object(Thresholds.definitions.map { ($0.name, jsonNumber(thresholds[$0.name])) })),
            ("gates", .array(gateList.map { g in
                .object([("name", .string(g.name)), ("value", jsonNumber(g.value)), ("threshold", jsonNumber(thresholds[g.name])), ("passed", .bool(g.passed))])
            })),
            ("seconds", jsonNumber(seconds)),
        ])
    }

    /// The human-readable summary: probe table, trajectory, distribution, gates, verdict last.
    public var text: String {
        var lines: [String] = []
        let s = settings
        lines.append("verify (\(s.mode)): \(name(original)) vs \(name(candidate))\(golden ? " (golden record)" : "")")
        lines.append("probes: \(s.probes.timesteps) timesteps x \(s.probes.batch) latents \(s.probes.size)x\(s.probes.size), seed \(s.probes.seed)")
        lines.append("  " + pad("t", 5) + pad("eps relL2", 11) + pad("cosine", 11) + pad("SQNR dB", 9) + pad("max abs", 11)
                     + pad("var relL2", 11) + pad("cosine", 11) + pad("SQNR dB", 9) + "max abs")
        for p in probes {
            lines.append("  " + pad(String(p.timestep), 5) + pad(sci(p.eps.relativeL2), 11) + pad(fixed(p.eps.cosine, 6), 11)
                         + pad(fixed(p.eps.sqnrDB, 1), 9) + pad(sci(p.eps.maxAbs), 11) + pad(sci(p.variance.relativeL2), 11)
                         + pad(fixed(p.variance.cosine, 6), 11) + pad(fixed(p.variance.sqnrDB, 1), 9) + sci(p.variance.maxAbs))
        }
        let sm = s.sampler
        lines.append("trajectories: \(sm.kind.rawValue) \(sm.respacing) steps, cfg \(sm.guidance.scale), \(sm.samples) samples \(sm.size)x\(sm.size), seed \(sm.seed)")
        let worstStep = stepDrift.max { $0.relativeL2 < $1.relativeL2 }
        lines.append("  step drift (rel L2): " + stepSummary() + (worstStep.map { "; worst \(sci($0.relativeL2)) at step \($0.step)" } ?? ""))
        lines.append("  final latents: rel L2 \(sci(final.relativeL2)), PSNR \(fixed(finalPSNR, 2)) dB, max abs \(sci(final.maxAbs)), largest per-sample rel L2 \(sci(sampleDrift.max() ?? 0))")
        lines.append("distribution (latent-space Fréchet distance, not Inception FID):")
        lines.append("  original vs candidate \(sci(frechet)); original vs original (noise floor) \(sci(floorFrechet)); ratio \(sci(frechetRatio))")
        lines.append("gates:")
        for g in gates {
            let d = Thresholds.definitions.first { $0.name == g.name }!
            // Cosines sit just under 1: scientific notation with 3 digits would print 1.00e+00.
            let show = g.name.contains("cosine") ? { fixed($0, 6) } : sci
            lines.append("  " + pad(g.passed ? "pass" : "FAIL", 6) + pad(g.name, 28) + pad(show(g.value), 11)
                         + (d.direction == .max ? "<= " : ">= ") + show(thresholds[g.name]))
        }
        lines.append("time: \(fixed(seconds, 1)) s")
        let failed = gates.filter { !$0.passed }.map(\.name)
        lines.append(passed ? "verdict: PASS" : "verdict: FAIL (" + failed.joined(separator: ", ") + ")")
        return lines.joined(separator: "\n")
    }

    /// A short summary for the `.dico` provenance of `convert --verify`.
    public var provenanceSummary: JSONValue {
        .object([
            ("passed", .bool(passed)), ("mode", .string(settings.mode)),
            ("sampler", .string("\(settings.sampler.kind.rawValue) \(settings.sampler.respacing) steps, cfg \(settings.sampler.guidance.scale)")),
            ("gates", .object(gates.map { ($0.name, jsonNumber($0.value)) })),
            ("thresholds", .object(Thresholds.definitions.map { ($0.name, jsonNumber(thresholds[$0.name])) })),
        ])
    }

    private func stepSummary() -> String {
        guard !stepDrift.isEmpty else { return "-" }
        let n = stepDrift.count
        let picks = Array(Set([0, n / 4, n / 2, (3 * n) / 4, n - 1])).sorted()
        return picks.map { "step \(stepDrift[$0].step) \(sci(stepDrift[$0].relativeL2))" }.joined(separator: ", ")
    }

    private func name(_ p: JSONValue) -> String {
        p.objectMembers?.first { $0.key == "file" }?.value.stringValue ?? "?"
    }
}

func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count) }

/// 3 significant digits in scientific notation ("1.23e-04"), "inf", "0".
func sci(_ v: Double) -> String {
    guard v.isFinite else { return v.isNaN ? "nan" : v > 0 ? "inf" : "-inf" }
    if v == 0 { return "0" }
    var e = Int(log10(abs(v)).rounded(.down))
    var m = v / pow10(e)
    if abs(m) >= 9.995 { m /= 10; e += 1 }
    let sign = m < 0 ? "-" : ""
    let c = Int((abs(m) * 100).rounded())
    let digits = "\(c / 100).\(c % 100 < 10 ? "0" : "")\(c % 100)"
    return "\(sign)\(digits)e\(e < 0 ? "-" : "+")\(abs(e) < 10 ? "0" : "")\(abs(e))"
}

/// `v` with `d` decimals, "inf" for infinities.
func fixed(_ v: Double, _ d: Int) -> String {
    guard v.isFinite else { return v.isNaN ? "nan" : v > 0 ? "inf" : "-inf" }
    let scale = pow10(d)
    let c = Int((abs(v) * scale).rounded())
    let whole = c / Int(scale), frac = c % Int(scale)
    let f = String(frac)
    return (v < 0 && c != 0 ? "-" : "") + "\(whole)" + (d > 0 ? "." + String(repeating: "0", count: d - f.count) + f : "")
}

private func pow10(_ e: Int) -> Double {
    var r = 1.0
    for _ in 0..<abs(e) { r *= 10 }
    return e < 0 ? 1 / r : r
}
