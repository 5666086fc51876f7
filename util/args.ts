// Command-line parsing shared by every command: node:util parseArgs plus typed, validated getters.
// Every numeric option has an upper bound: a value past it is a usage error naming the option, the value and
// the allowed range (an unchecked 5000000000 ms timeout wraps to a timer that fires at once).
import { parseArgs } from 'node:util';
import { closest } from './suggest.ts';

/** A mistake in how the command was called: printed as one line, exit code 2. */
export class UsageError extends Error {}

export type OptionSpec = Record<string, { type: 'string' | 'boolean'; short?: string; default?: string | boolean }>;

/** The longest delay a Node.js timer honours (2^31-1 ms, about 24.8 days); setTimeout turns a longer one into 1 ms. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** Upper bounds shared by several commands' options (one place for the numbers). */
export const OPTION_MAX = {
  /** The bound of an integer option that names none: also the timer limit, so no option can wrap a timer. */
  int: MAX_TIMER_MS,
  threads: 1024,
  epochs: 100_000,
  batchSize: 65_536,
  /** Images or bags a run may take from a data set (--limit-train, --limit-test, --bags). */
  items: 100_000_000,
  members: 1000,
  workers: 256,
  seed: 2 ** 31 - 1,
  /** Iterations, steps or rounds of a benchmark or a search. */
  steps: 100_000,
  lr: 10,
  /** A temperature or other real of a recipe. */
  real: 1e6,
} as const;

export function parse<T extends OptionSpec>(argv: string[], options: T) {
  try {
    return parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (e) {
    throw new UsageError(unknownOption(e as Error, options) ?? (e as Error).message.split('\n')[0]);
  }
}

/** node's "Unknown option '--epoch'" as "unknown option --epoch (did you mean --epochs?)". */
function unknownOption(e: Error, options: OptionSpec): string | undefined {
  const bad =
    (e as { code?: string }).code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' ? /'(-[^']*)'/.exec(e.message)?.[1] : undefined;
  if (!bad) return undefined;
  const name = bad.replace(/^--?/, '').split('=')[0];
  const near = closest(name, Object.keys(options));
  return `unknown option ${bad}${near ? ` (did you mean --${near}?)` : ' (see --help)'}`;
}

/** An integer option in [min, max] (max defaults to OPTION_MAX.int = MAX_TIMER_MS). */
export function intOption(
  values: Record<string, unknown>,
  name: string,
  def: number,
  min = 0,
  max: number = OPTION_MAX.int,
): number {
  const raw = values[name];
  if (raw === undefined) return def;
  const s = String(raw);
  if (!/^-?\d+$/.test(s)) throw new UsageError(`--${name}: expected an integer, got "${s}"`);
  return inRange(name, Number(s), s, min, max);
}

/** A real-valued option in [min, max] (both default to the finite numbers' range). */
export function numberOption(
  values: Record<string, unknown>,
  name: string,
  def: number,
  min = -Number.MAX_VALUE,
  max = Number.MAX_VALUE,
): number {
  const raw = values[name];
  if (raw === undefined) return def;
  const s = String(raw);
  const n = Number(s);
  if (s.trim() === '' || !Number.isFinite(n)) throw new UsageError(`--${name}: expected a number, got "${s}"`);
  return inRange(name, n, s, min, max);
}

function inRange(name: string, n: number, text: string, min: number, max: number): number {
  const range = `allowed ${fmt(min)}..${fmt(max)}`;
  if (n < min) throw new UsageError(`--${name}: must be at least ${fmt(min)}, got ${text} (${range})`);
  if (n > max) throw new UsageError(`--${name}: must be at most ${fmt(max)}, got ${text} (${range})`);
  return n;
}

const fmt = (n: number) => (n === -Number.MAX_VALUE ? '-inf' : n === Number.MAX_VALUE ? 'inf' : String(n));

export function choiceOption<T extends string>(
  values: Record<string, unknown>,
  name: string,
  choices: readonly T[],
  def: T,
): T {
  const raw = values[name];
  if (raw === undefined) return def;
  const s = String(raw);
  if (!(choices as readonly string[]).includes(s))
    throw new UsageError(`--${name}: expected one of ${choices.join('|')}, got "${s}"`);
  return s as T;
}

/** A real option > 0 and at most max (learning rates, temperatures, means). */
export function positiveOption(
  values: Record<string, unknown>,
  name: string,
  def: number,
  max: number = OPTION_MAX.real,
): number {
  const v = numberOption(values, name, def);
  const text = String(values[name]);
  if (!(v > 0)) throw new UsageError(`--${name}: must be positive, got ${text} (allowed >0..${max})`);
  if (v > max) throw new UsageError(`--${name}: must be at most ${max}, got ${text} (allowed >0..${max})`);
  return v;
}
