// A model's config.yaml (or config.json) in the model repository: batching limits and, for ensembles, how
// votes are aggregated and which members answer over the bus. Every key is optional; unknown keys are an
// error, so that a typo does not silently fall back to a default.
//
//   max_batch_size: 64          images per session run after dynamic batching (MIL models: one bag per run)
//   max_queue_delay_ms: 0       how long the first queued request waits for others (0: only while the session is busy)
//   max_request_images: 1024    larger requests get RESOURCE_EXHAUSTED
//   max_queue_images: 8192      images waiting at most; beyond, RESOURCE_EXHAUSTED
//   aggregation: weighted       one-graph ensembles: soft (equal mean of member_probabilities), hard (votes),
//                               weighted (the graph's own selection-weighted vote; the default)
//   ensemble:                   a fan-out ensemble: no .onnx of its own, members are other models
//     members:
//       - { name: cnn-a, weight: 0.6 }            a model in this repository
//       - { name: cnn-b, weight: 0.4, remote: true }  asked over NATS on fleet.infer.cnn-b (queue group)
//     aggregation: weighted     soft (equal mean), weighted (weighted mean), hard (weighted votes)
//     deadline_ms: 1000         members that have not answered by then are missing
//     quorum: 2                 members that must answer (default: all); fewer fails the request
import * as fs from 'node:fs';
import * as path from 'node:path';
import YAML from 'yaml';

export const AGGREGATIONS = ['soft', 'hard', 'weighted'] as const;
export type Aggregation = (typeof AGGREGATIONS)[number];

export interface EnsembleMemberConfig {
  name: string;
  version: string;
  weight: number;
  remote: boolean;
}
export interface EnsembleConfig {
  members: EnsembleMemberConfig[];
  aggregation: Aggregation;
  deadlineMs: number;
  quorum: number;
}

export interface ModelConfig {
  maxBatchSize: number;
  maxQueueDelayMs: number;
  maxRequestImages: number;
  maxQueueImages: number;
  aggregation?: Aggregation;
  ensemble?: EnsembleConfig;
}

export const CONFIG_FILES = ['config.yaml', 'config.yml', 'config.json'];

export const DEFAULT_CONFIG: ModelConfig = {
  maxBatchSize: 64,
  maxQueueDelayMs: 0,
  maxRequestImages: 1024,
  maxQueueImages: 8192,
};

/** The config file of a model folder, or undefined when it has none. */
export function configFile(modelDir: string): string | undefined {
  return CONFIG_FILES.map(f => path.join(modelDir, f)).find(f => fs.existsSync(f));
}

/** Reads and validates a model folder's config (defaults when there is none); throws naming the file and key. */
export function readModelConfig(modelDir: string): ModelConfig {
  const file = configFile(modelDir);
  if (!file) return { ...DEFAULT_CONFIG };
  let raw: unknown;
  try {
    raw = YAML.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new Error(`${file}: not valid YAML/JSON: ${(e as Error).message.split('\n')[0]}`);
  }
  return parseModelConfig(raw ?? {}, file);
}

export function parseModelConfig(raw: unknown, where: string): ModelConfig {
  const bad = (key: string, v: unknown, want: string) =>
    new Error(`${where}: ${key} must be ${want}, got ${JSON.stringify(v)}`);
  const obj = (v: unknown, key: string): Record<string, unknown> => {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw bad(key, v, 'a mapping');
    return v as Record<string, unknown>;
  };
  const only = (o: Record<string, unknown>, keys: string[], at: string) => {
    for (const k of Object.keys(o))
      if (!keys.includes(k)) throw new Error(`${where}: unknown key ${at}${k} (expected one of ${keys.join(', ')})`);
  };
  const int = (o: Record<string, unknown>, key: string, def: number, min: number, max: number) => {
    const v = o[key];
    if (v === undefined) return def;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max)
      throw bad(key, v, `an integer in [${min}, ${max}]`);
    return v;
  };
  const aggregation = (v: unknown, key: string): Aggregation => {
    if (!(AGGREGATIONS as readonly unknown[]).includes(v)) throw bad(key, v, `one of ${AGGREGATIONS.join('|')}`);
    return v as Aggregation;
  };

  const o = obj(raw, 'the config');
  only(
    o,
    ['max_batch_size', 'max_queue_delay_ms', 'max_request_images', 'max_queue_images', 'aggregation', 'ensemble'],
    '',
  );
  const config: ModelConfig = {
    maxBatchSize: int(o, 'max_batch_size', DEFAULT_CONFIG.maxBatchSize, 1, 4096),
    maxQueueDelayMs: int(o, 'max_queue_delay_ms', DEFAULT_CONFIG.maxQueueDelayMs, 0, 10_000),
    maxRequestImages: int(o, 'max_request_images', DEFAULT_CONFIG.maxRequestImages, 1, 1_000_000),
    maxQueueImages: int(o, 'max_queue_images', DEFAULT_CONFIG.maxQueueImages, 1, 10_000_000),
  };
  if (o.aggregation !== undefined) config.aggregation = aggregation(o.aggregation, 'aggregation');
  if (o.ensemble !== undefined) {
    if (o.aggregation !== undefined)
      throw new Error(`${where}: aggregation belongs under ensemble: for a fan-out ensemble`);
    const e = obj(o.ensemble, 'ensemble');
    only(e, ['members', 'aggregation', 'deadline_ms', 'quorum'], 'ensemble.');
    if (!Array.isArray(e.members) || e.members.length === 0)
      throw bad('ensemble.members', e.members, 'a non-empty list');
    const members = e.members.map((m: unknown, i: number) => {
      const at = `ensemble.members[${i}]`;
      const mo = obj(m, at);
      only(mo, ['name', 'version', 'weight', 'remote'], `${at}.`);
      if (typeof mo.name !== 'string' || !/^[A-Za-z0-9_-]{1,128}$/.test(mo.name))
        throw bad(`${at}.name`, mo.name, 'a model name (letters, digits, _ and -)');
      if (mo.version !== undefined && typeof mo.version !== 'string' && typeof mo.version !== 'number')
        throw bad(`${at}.version`, mo.version, 'a version number');
      const weight = mo.weight ?? 1;
      if (typeof weight !== 'number' || !Number.isFinite(weight) || weight < 0)
        throw bad(`${at}.weight`, mo.weight, 'a finite number >= 0');
      if (mo.remote !== undefined && typeof mo.remote !== 'boolean')
        throw bad(`${at}.remote`, mo.remote, 'true or false');
      return {
        name: mo.name,
        version: mo.version === undefined ? '' : String(mo.version),
        weight,
        remote: mo.remote === true,
      };
    });
    if (!members.some(m => m.weight > 0))
      throw bad(
        'ensemble.members[*].weight',
        members.map(m => m.weight),
        'positive for at least one member',
      );
    config.ensemble = {
      members,
      aggregation: e.aggregation === undefined ? 'weighted' : aggregation(e.aggregation, 'ensemble.aggregation'),
      deadlineMs: int(e, 'deadline_ms', 1000, 1, 600_000),
      quorum: int(e, 'quorum', members.length, 1, members.length),
    };
  }
  return config;
}
