// Inference errors carry the gRPC status a client should see; anything else that escapes is INTERNAL.
import { status as Status } from '@grpc/grpc-js';

export { Status };

export class ServeError extends Error {
  constructor(readonly code: Status, message: string) { super(message); }
}

export const notFound = (m: string) => new ServeError(Status.NOT_FOUND, m);
export const invalid = (m: string) => new ServeError(Status.INVALID_ARGUMENT, m);
export const tooLarge = (m: string) => new ServeError(Status.RESOURCE_EXHAUSTED, m);
export const deadline = (m: string) => new ServeError(Status.DEADLINE_EXCEEDED, m);
export const unavailable = (m: string) => new ServeError(Status.UNAVAILABLE, m);

/** The status code of an error (INTERNAL for anything that is not a ServeError). */
export const codeOf = (e: unknown): Status => (e instanceof ServeError ? e.code : Status.INTERNAL);

/** The status name used as the metric label: OK, NOT_FOUND, INVALID_ARGUMENT, ... */
export const statusName = (code: Status): string => Status[code] ?? String(code);
