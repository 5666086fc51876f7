// Inference errors carry the gRPC status a client should see; anything else that escapes is INTERNAL.
// What a client sees of a message is bounded (forClient): echoed client strings are cut (quote), absolute server
// paths are shortened to their last parts, and the whole message has a maximum length.
import { status as Status } from '@grpc/grpc-js';

export { Status };

export class ServeError extends Error {
  constructor(
    readonly code: Status,
    message: string,
  ) {
    super(message);
  }
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

/** Longest error message a client gets, and longest client string echoed in one. */
export const MAX_MESSAGE_CHARS = 1000;
export const MAX_ECHO_CHARS = 64;

/** A client-supplied value for an error message: JSON-quoted and cut to MAX_ECHO_CHARS. */
export function quote(v: unknown): string {
  const s = typeof v === 'string' ? v : String(v);
  return JSON.stringify(s.length > MAX_ECHO_CHARS ? `${s.slice(0, MAX_ECHO_CHARS)}...` : s);
}

// an absolute path of three or more parts (/home/x/models/cnn/1/model.onnx): only its last three are kept
const ABSOLUTE_PATH = /(?<![\w.])(?:\/[^\s/"'`:;,()[\]]+){4,}/g;

/** An error message as a client may see it: no absolute server paths, at most MAX_MESSAGE_CHARS. */
export function forClient(message: string): string {
  const m = message.replace(ABSOLUTE_PATH, p => `.../${p.split('/').slice(-3).join('/')}`);
  return m.length > MAX_MESSAGE_CHARS ? `${m.slice(0, MAX_MESSAGE_CHARS - 3)}...` : m;
}
