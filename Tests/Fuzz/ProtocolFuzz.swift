// libFuzzer target for the MusterProtocol decoders. Not part of any SwiftPM target: Scripts/fuzz
// compiles it together with Sources/MusterProtocol into one module, with -sanitize=fuzzer,address.
//
// For every input and every decoder: decoding must not crash; when it succeeds, encoding the
// message and decoding that again must give the same message, and encoding is a fixed point.

func roundTrip<M: ProtocolDecodable & ProtocolEncodable & Equatable>(_: M.Type, _ input: UnsafeBufferPointer<UInt8>) {
    let message: M
    do {
        message = try M.decode(input, limits: .default)
    } catch {
        precondition(!error.code.rawValue.isEmpty)
        return
    }
    let encoded = message.encode()
    let again: M
    do {
        again = try encoded.withUnsafeBufferPointer { try M.decode($0, limits: .default) }
    } catch {
        fatalError("re-encoded \(M.self) does not decode: \(error)\n\(String(decoding: encoded, as: UTF8.self))")
    }
    precondition(again == message, "\(M.self) changed in a round trip: \(String(decoding: encoded, as: UTF8.self))")
    precondition(again.encode() == encoded, "\(M.self) encoding is not stable")
}

@_cdecl("LLVMFuzzerTestOneInput")
public func protocolFuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let input = UnsafeBufferPointer(start: data, count: size)
    roundTrip(BackendToCoordinator.self, input)
    roundTrip(CoordinatorToBackend.self, input)
    roundTrip(ClientToCoordinator.self, input)
    roundTrip(CoordinatorToClient.self, input)
    roundTrip(Wire.BatchRequest.self, input)
    roundTrip(Wire.Accepted.self, input)
    roundTrip(Wire.BatchInfo.self, input)
    roundTrip(Wire.JobInfo.self, input)
    roundTrip(Wire.CancelResult.self, input)
    roundTrip(Wire.BackendList.self, input)
    roundTrip(Wire.LoadModelRequest.self, input)
    roundTrip(Wire.ModelsLoading.self, input)
    roundTrip(Wire.Health.self, input)
    roundTrip(Wire.Readiness.self, input)
    roundTrip(Wire.ErrorBody.self, input)
    return 0
}
