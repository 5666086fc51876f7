// Reading Prometheus exposition text in tests, and running promtool (Debian package `prometheus`) on it.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';

export const PROMTOOL = '/usr/bin/promtool';
export const promtoolAvailable = () => fs.existsSync(PROMTOOL);

/** Samples of an exposition: `name{a="x",b="y"}` (labels sorted) -> value. */
export function parseExposition(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`not an exposition line: ${line}`);
    const labels = m[2]
      ? [...m[2].matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)]
          .map(x => `${x[1]}="${x[2]}"`)
          .sort()
          .join(',')
      : '';
    out.set(labels ? `${m[1]}{${labels}}` : m[1], Number(m[3]));
  }
  return out;
}

/** The value of one sample; labels in any order. Throws (listing what there is) when it is absent. */
export function sample(samples: Map<string, number>, name: string, labels: Record<string, string> = {}): number {
  const keys = Object.entries(labels)
    .map(([k, v]) => `${k}="${v}"`)
    .sort()
    .join(',');
  const key = keys ? `${name}{${keys}}` : name;
  const v = samples.get(key);
  if (v === undefined)
    throw new Error(
      `no sample ${key}; have: ${[...samples.keys()].filter(k => k.startsWith(name)).join(' ') || 'none of that name'}`,
    );
  return v;
}

/** Sum of every sample of `name` whose labels include `labels`. */
export function sumOf(samples: Map<string, number>, name: string, labels: Record<string, string> = {}): number {
  let total = 0;
  for (const [k, v] of samples) {
    const m = /^([^{]+)(?:\{(.*)\})?$/.exec(k)!;
    if (m[1] !== name) continue;
    if (Object.entries(labels).every(([l, x]) => (m[2] ?? '').split(',').includes(`${l}="${x}"`))) total += v;
  }
  return total;
}

/** Runs `promtool <args>` (stdin optional); returns its exit status and output. */
export function promtool(args: string[], input?: string): { status: number | null; output: string } {
  const r = spawnSync(PROMTOOL, args, { input, encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, output: `${r.stdout ?? ''}${r.stderr ?? ''}` };
}
