import DicoCore

extension DiCoConfig {
    /// The configuration as the JSON object `inspect --json` and `.dico` headers use.
    public var json: JSONValue {
        .object([
            ("hidden_size", .integer(hidden)),
            ("depths", .array(depths.map { .integer($0) })),
            ("mlp_ratio", .integer(mlpRatio)),
            ("in_channels", .integer(inChannels)),
            ("out_channels", .integer(outChannels)),
            ("learn_sigma", .bool(learnSigma)),
            ("num_classes", .integer(numClasses)),
            ("null_class", .bool(hasNullClass)),
            ("frequency_size", .integer(frequencySize)),
        ])
    }

    /// Reads a configuration written by `json`.
    /// - Throws: `DicoError.invalidInput` naming `file` and the missing or malformed key.
    public init(json: JSONValue, file: String) throws {
        guard let members = json.objectMembers else { throw DicoError.invalid(file, "the model 'config' is not a JSON object") }
        guard Set(members.map(\.key)).count == members.count else { throw DicoError.invalid(file, "the model config has a key twice") }
        // Bounds far above any DiCo keep the parameter arithmetic from overflowing.
        func int(_ k: String, max: Int = 1 << 20) throws -> Int {
            guard let v = members.first(where: { $0.key == k })?.value.exactNonNegativeInt, v <= max else {
                throw DicoError.invalid(file, "the model config has no integer '\(k)' in 0...\(max)")
            }
            return v
        }
        guard case let .array(d)? = members.first(where: { $0.key == "depths" })?.value, d.count == 5,
              case let depths = d.compactMap(\.exactNonNegativeInt).filter({ $0 <= 1 << 12 }), depths.count == 5 else {
            throw DicoError.invalid(file, "the model config's 'depths' is not five non-negative integers")
        }
        guard case let .bool(null)? = members.first(where: { $0.key == "null_class" })?.value else {
            throw DicoError.invalid(file, "the model config has no boolean 'null_class'")
        }
        self.init(hidden: try int("hidden_size"), depths: depths, mlpRatio: try int("mlp_ratio", max: 64), inChannels: try int("in_channels"),
                  outChannels: try int("out_channels"), numClasses: try int("num_classes"), hasNullClass: null,
                  frequencySize: try int("frequency_size"))
    }
}
