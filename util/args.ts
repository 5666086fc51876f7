// Command-line parsing shared by every command: node:util parseArgs plus typed, validated getters.
import { parseArgs } from 'node:util';
import { closest } from './suggest.ts';

/** A mistake in how the command was called: printed as one line, exit code 2. */
export class UsageError extends Error {}

export type OptionSpec = Record<string, { type: 'string' | 'boolean'; short?: string; default?: string | boolean }>;

export function parse<T extends OptionSpec>(argv: string[], options: T) {
  try {
    return parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (e) {
    throw new UsageError(unknownOption(e as Error, options) ?? (e as Error).message.split('\n')[0]);
  }
}

/** node's "Unknown option '--epoch'" as "unknown option --epoch (did you mean --epochs?)". */
function unknownOption(e: Error, options: OptionSpec): string | undefined {
  const bad = (e as { code?: string }).code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' ? /'(-[^']*)'/.exec(e.message)?.[1] : undefined;
  if (!bad) return undefined;
  const name = bad.replace(/^--?/, '').split('=')[0];
  const near = closest(name, Object.keys(options));
  return `unknown option ${bad}${near ? ` (did you mean --${near}?)` : ' (see --help)'}`;
}

export function intOption(values: Record<string, unknown>, name: string, def: number, min = 0): number {
  const raw = values[name];
  if (raw === undefined) return def;
  const s = String(raw);
  if (!/^-?\d+$/.test(s)) throw new UsageError(`--${name}: expected an integer, got "${s}"`);
  const n = Number(s);
  if (n < min) throw new UsageError(`--${name}: must be at least ${min}, got ${n}`);
  return n;
}

export function numberOption(values: Record<string, unknown>, name: string, def: number): number {
  const raw = values[name];
  if (raw === undefined) return def;
  const s = String(raw);
  const n = Number(s);
  if (s.trim() === '' || !Number.isFinite(n)) throw new UsageError(`--${name}: expected a number, got "${s}"`);
  return n;
}

export function choiceOption<T extends string>(values: Record<string, unknown>, name: string, choices: readonly T[], def: T): T {
  const raw = values[name];
  if (raw === undefined) return def;
  const s = String(raw);
  if (!(choices as readonly string[]).includes(s)) throw new UsageError(`--${name}: expected one of ${choices.join('|')}, got "${s}"`);
  return s as T;
}
