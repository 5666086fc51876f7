// The layer rule of docs/design.md, read from the source (used by test/layers.test.ts and the deploy test).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Which top-level folders each folder may import (besides itself). Lowest layers first. */
export const LAYERS: Record<string, string[]> = {
  util: [],
  telemetry: [],
  engine: ['util'],
  bus: ['util'],
  dashboard: ['util', 'telemetry', 'engine'],
  serving: ['util', 'telemetry', 'engine', 'bus'],
  coordinator: ['util', 'telemetry', 'engine', 'bus', 'dashboard'],
  worker: ['util', 'telemetry', 'engine', 'bus'],
  bench: ['util', 'telemetry', 'engine', 'bus', 'dashboard', 'serving', 'coordinator', 'worker'],
  cli: ['util', 'telemetry', 'engine', 'bus', 'dashboard', 'serving', 'coordinator', 'worker', 'bench'],
  bin: ['cli'],
};

export const IMPORT = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+|new URL\(\s*)['"](\.\.?\/[^'"]+)['"]/g;

export function sourceFiles(dir: string): string[] {
  return (fs.readdirSync(path.join(ROOT, dir), { recursive: true }) as string[])
    .filter(f => /\.(ts|js|mjs)$/.test(f) && !f.split(path.sep).includes('node_modules'))
    .map(f => path.join(dir, f));
}

/** Every cross-folder import that breaks the rule, as "file -> target". */
export function layerViolations(): string[] {
  const bad: string[] = [];
  for (const folder of Object.keys(LAYERS)) {
    for (const file of sourceFiles(folder)) {
      const src = fs.readFileSync(path.join(ROOT, file), 'utf8');
      for (const m of src.matchAll(IMPORT)) {
        const target = path.normalize(path.join(path.dirname(file), m[1]));
        const top = target.split(path.sep)[0];
        if (top !== folder && !LAYERS[folder].includes(top)) bad.push(`${file} -> ${target}`);
      }
    }
  }
  return bad;
}
