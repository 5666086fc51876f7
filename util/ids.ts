// Identifiers that reach a file path, a bus subject or a metric label (job ids, task and member names, worker
// ids, model names) are checked by one rule here, and output paths are resolved and kept under their root.
import * as path from 'node:path';

/** A letter or digit, then up to 63 letters, digits, '.', '_' or '-'; never `..` (no path step, no empty token). */
const ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export function isId(value: unknown): value is string {
  return typeof value === 'string' && ID.test(value) && !value.includes('..');
}

/** Returns value when it is a valid identifier; throws naming `kind` and the value otherwise. */
export function checkId(kind: string, value: unknown): string {
  if (isId(value)) return value;
  const shown =
    typeof value === 'string' ? JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}...` : value) : String(value);
  throw new Error(
    `invalid ${kind} ${shown}: expected 1-64 letters, digits, '.', '_' or '-', ` +
      `starting with a letter or digit, no '..'`,
  );
}

/** The path of `parts` joined under `root`; throws when the result is not inside root (absolute parts, `..`). */
export function pathUnder(root: string, ...parts: string[]): string {
  const base = path.resolve(root);
  const full = path.resolve(base, ...parts);
  if (full === base || !full.startsWith(base + path.sep)) {
    throw new Error(`path ${JSON.stringify(parts.join('/'))} leaves its root ${base}`);
  }
  return full;
}
