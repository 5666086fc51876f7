// Where the coordinator keeps job state so that a restarted coordinator resumes: a key-value store of
// byte blobs. Keys are '/'-separated paths ("jobs/<id>/job.json"). Two implementations: a directory
// (the embedded default and --state DIR) and JetStream (KV for small records, the object store for blobs)
// when the coordinator runs on NATS.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeFileAtomic } from '../engine/util/atomic.ts';

export interface StateStore {
  /** Where the state lives, for logs ("directory ./fleet-state", "JetStream bucket fleet-state"). */
  readonly description: string;
  /** Replaces the value of `key` atomically: a reader sees the old value or the new one, never a part. */
  put(key: string, data: Uint8Array | string): Promise<void>;
  /** The value of `key`, or null when there is none. */
  get(key: string): Promise<Uint8Array | null>;
  /** Every key under `prefix` (a '/'-terminated folder, or '' for all), sorted. */
  list(prefix: string): Promise<string[]>;
  delete(key: string): Promise<void>;
  close(): Promise<void>;
}

/**
 * Checks a key: relative, '/'-separated segments of letters, digits, '-', '_' and '=', optionally with
 * single inner dots ("job.json"). One grammar for every store: it cannot escape a directory and it is a
 * valid JetStream KV key.
 */
export function checkKey(key: string): string {
  if (typeof key !== 'string' || !key.split('/').every(s => /^[-=\w]+(\.[-=\w]+)*$/.test(s))) {
    throw new Error(
      `state store: invalid key ${JSON.stringify(key)} (segments of letters, digits, '-', '_', '=' and inner dots, joined by '/')`,
    );
  }
  return key;
}

export class DirStateStore implements StateStore {
  readonly description: string;
  constructor(readonly dir: string) {
    fs.mkdirSync(dir, { recursive: true });
    this.description = `directory ${dir}`;
  }

  private file(key: string) {
    return path.join(this.dir, ...checkKey(key).split('/'));
  }

  async put(key: string, data: Uint8Array | string) {
    writeFileAtomic(this.file(key), data);
  }

  async get(key: string) {
    try {
      return new Uint8Array(fs.readFileSync(this.file(key)));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw e;
    }
  }

  async list(prefix: string) {
    if (prefix && !prefix.endsWith('/'))
      throw new Error(`state store: a list prefix is a folder ending in '/', got ${JSON.stringify(prefix)}`);
    const base = prefix ? this.file(prefix.replace(/\/$/, '')) : this.dir;
    const keys: string[] = [];
    const walk = (dir: string, rel: string) => {
      let entries: fs.Dirent[];
      try {
        entries = fs.readdirSync(dir, { withFileTypes: true });
      } catch {
        return;
      }
      for (const e of entries) {
        if (e.name.includes('.tmp-')) continue; // an interrupted atomic write
        const k = rel ? `${rel}/${e.name}` : e.name;
        if (e.isDirectory()) walk(path.join(dir, e.name), k);
        else keys.push(k);
      }
    };
    walk(base, prefix.replace(/\/$/, ''));
    return keys.sort();
  }

  async delete(key: string) {
    fs.rmSync(this.file(key), { force: true });
  }

  async close() {}
}
