import Foundation
import Logging
import MusterProtocol

extension MusterClient {
    /// True for failures a new link may cure: the link dropped, the coordinator could not be
    /// reached or did not answer in time, it is stopping, its job store cannot write yet, or it is
    /// a standby (`not_leader`: the leader moves). Not a refusal (bad credentials, no common
    /// version) and not an error about the request itself.
    public static func isTransient(_ error: MusterClientError) -> Bool {
        [
            MusterClientError.linkClosed, MusterClientError.connectionFailed, MusterClientError.timeout, ErrorCode.shuttingDown,
            ErrorCode.storeUnavailable, ErrorCode.notLeader,
        ].contains(error.code)
    }

    /// Connects, and while the failure is transient (``isTransient(_:)``) dials again with backoff
    /// (0.5 s doubling to 5 s; to 1 s while a standby answers `not_leader`: the lead is moving and
    /// will be taken within seconds) until `deadline`: for a coordinator that is restarting.
    public static func connect(
        _ options: Options, logger: Logger, retryingUntil deadline: ContinuousClock.Instant
    ) async throws(MusterClientError) -> MusterClient {
        var delay = Duration.milliseconds(500)
        while true {
            do {
                return try await connect(options, logger: logger)
            } catch {
                guard isTransient(error), ContinuousClock.now + delay < deadline else { throw error }
                try? await Task.sleep(for: delay)
                delay = min(delay * 2, error.code == .notLeader ? .seconds(1) : .seconds(5))
            }
        }
    }

    /// Dials and subscribes to `batch` again until `deadline`, while what fails is transient: a
    /// coordinator that restarted answers `store_unavailable` to the subscription until its job
    /// store has opened (it may be retrying), and then knows the batch again.
    static func resubscribe(
        batch: BatchID, options: Options, logger: Logger, until deadline: ContinuousClock.Instant
    ) async throws(MusterClientError) -> MusterClient {
        var delay = Duration.milliseconds(500)
        while true {
            let next = try await connect(options, logger: logger, retryingUntil: deadline)
            do {
                try await next.subscribe(batch: batch)
                return next
            } catch {
                await next.close()
                guard isTransient(error), ContinuousClock.now + delay < deadline else { throw error }
                try? await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(5))
            }
        }
    }

    /// Follows one batch until every job is final, riding through lost links: when the link
    /// drops (a coordinator restarting on its job store), it dials again with `options` until
    /// `reconnectFor` has passed, subscribes to the batch again and folds the snapshot in.
    /// `onEvent` sees every event that changed the batch's progress, with `newFinal` true exactly
    /// once per job: the event that made it final, live or from a snapshot. Returns the final
    /// progress. The client passed in is not closed; the ones dialled here are.
    public static func follow(
        batch: BatchID, jobs: [JobID], on first: MusterClient, options: Options, logger: Logger,
        reconnectFor: Duration, onReconnect: (MusterClientError) -> Void = { _ in },
        onEvent: (CoordinatorToClient.JobEvent, BatchProgress, _ newFinal: Bool) -> Void
    ) async throws(MusterClientError) -> BatchProgress {
        var client = first
        var own: MusterClient?
        var progress = BatchProgress(batch: batch, jobs: jobs)
        // A link lost before the first subscription (the coordinator died after `accepted`) is
        // dialled again like one lost later.
        var lost: MusterClientError?
        do {
            try await client.subscribe(batch: batch)
        } catch {
            lost = error
        }
        while true {
            if lost == nil {
                for await event in client.events {
                    let wasFinal = progress.isFinal(event.job)
                    guard progress.apply(event) else { continue }
                    onEvent(event, progress, !wasFinal && event.state.isFinal)
                    if progress.isDone { break }
                }
                if progress.isDone { break }
            }
            let error =
                if let lost { lost } else {
                    await client.closeError
                        ?? MusterClientError(code: MusterClientError.linkClosed, message: "the job events ended early")
                }
            lost = nil
            guard isTransient(error), reconnectFor > .zero else {
                await own?.close()
                throw error
            }
            onReconnect(error)
            let next: MusterClient
            do {
                next = try await resubscribe(batch: batch, options: options, logger: logger, until: .now + reconnectFor)
            } catch {
                await own?.close()
                throw error
            }
            await own?.close()
            own = next
            client = next
        }
        await own?.close()
        return progress
    }
}
