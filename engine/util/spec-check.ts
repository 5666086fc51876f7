// Checks for untrusted JSON job specs: every error names the spec, the field and the value it got.

export interface SpecChecker {
  /** The spec as an object (already checked to be a JSON object). */
  o: Record<string, unknown>;
  /** An error saying `field` must be `want`. */
  bad(field: string, value: unknown, want: string): Error;
  /** Throws unless o[k] is an integer in [min, max] (or absent, when optional). */
  int(k: string, min: number, max: number, optional?: boolean): void;
}

/** Starts checking `spec` (what: "job spec", "data-parallel job spec"); throws unless it is a JSON object. */
export function specChecker(what: string, spec: unknown): SpecChecker {
  const bad = (field: string, value: unknown, want: string) =>
    new Error(`${what}: ${field} must be ${want}, got ${JSON.stringify(value)}`);
  if (typeof spec !== 'object' || spec === null || Array.isArray(spec)) throw bad('the spec', spec, 'a JSON object');
  const o = spec as Record<string, unknown>;
  const int = (k: string, min: number, max: number, optional = false) => {
    const v = o[k];
    if (optional && v === undefined) return;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max)
      throw bad(k, v, `an integer in [${min}, ${max}]`);
  };
  return { o, bad, int };
}
