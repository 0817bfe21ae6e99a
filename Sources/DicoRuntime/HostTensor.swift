import DicoCore

/// A tensor held in ordinary Swift arrays: what callers pass to and get from the executor.
public struct HostTensor: Sendable, Equatable {
    /// The element storage; the executor's inputs and outputs are f32 or i64.
    public enum Storage: Sendable, Equatable {
        case f32([Float])
        case i64([Int64])
    }

    public var shape: [Int]
    public var storage: Storage

    /// A float32 tensor.
    public init(shape: [Int], floats: [Float]) {
        precondition(shape.reduce(1, *) == floats.count, "shape and element count agree")
        self.shape = shape
        storage = .f32(floats)
    }

    /// An int64 tensor.
    public init(shape: [Int], int64s: [Int64]) {
        precondition(shape.reduce(1, *) == int64s.count, "shape and element count agree")
        self.shape = shape
        storage = .i64(int64s)
    }

    public var dtype: DType {
        switch storage {
        case .f32: return .f32
        case .i64: return .i64
        }
    }

    /// The float32 values, or nil for an integer tensor.
    public var floats: [Float]? {
        if case let .f32(v) = storage { return v }
        return nil
    }

    /// The same values as a `TensorData` (for writing to a file).
    public var tensorData: TensorData {
        switch storage {
        case let .f32(v): return TensorData(shape: shape, floats: v)
        case let .i64(v): return TensorData(shape: shape, int64s: v)
        }
    }
}
