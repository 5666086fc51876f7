// The cause of a failed network call in words: fetch() rejects with a bare "fetch failed" whose cause (often an
// AggregateError of one attempt per address) holds the system error that says what happened.

/** "connect ECONNREFUSED 127.0.0.1:1", "getaddrinfo ENOTFOUND host", ... or the message itself. */
export function networkCause(e: unknown): string {
  const seen = new Set<unknown>();
  let err = e;
  // the innermost cause is the system error; AggregateErrors list one per address tried
  while (err instanceof Error && err.cause !== undefined && !seen.has(err.cause)) {
    seen.add(err);
    err = err.cause;
  }
  if (err instanceof AggregateError && err.errors.length) return [...new Set(err.errors.map(networkCause))].join('; ');
  if (err instanceof Error) {
    const code = (err as { code?: string }).code;
    return code && !err.message.includes(code) ? `${code}: ${err.message}` : err.message || code || String(err);
  }
  return String(err);
}
