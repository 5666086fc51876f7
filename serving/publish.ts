// Putting models into a repository so that a polling server picks each up whole: a version folder is built under
// a hidden temporary name and renamed into place (a rename is atomic), so a server never sees a half-copied
// model.onnx. Several models go in all or nothing (an ensemble and its members): every copy is staged first,
// and if one cannot be put in place the ones already renamed are taken out again. Removing goes the other way:
// the folder is renamed to a hidden name first (the server unloads it at once), then deleted.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { MAX_VERSION, MODEL_NAME, VERSION_FOLDER } from './repository.ts';

export interface ModelToAdd {
  name: string;
  onnx: string;
  version?: number;
}

const checkName = (name: string) => {
  if (!MODEL_NAME.test(name))
    throw new Error(`model name ${JSON.stringify(name)}: use letters, digits, _ and - only (at most 128)`);
};

/** Copies an .onnx file into <repo>/<name>/<version>/model.onnx (version: the next free one); returns the version. */
export function addModelVersion(repo: string, name: string, onnxFile: string, version?: number): number {
  return addModelVersions(repo, [{ name, onnx: onnxFile, version }])[0];
}

/** Adds several models all or nothing; returns their versions in order. */
export function addModelVersions(repo: string, models: ModelToAdd[]): number[] {
  const planned: { target: string; tmp: string; version: number }[] = [];
  // check everything before touching the repository
  for (const m of models) {
    checkName(m.name);
    if (!fs.existsSync(m.onnx)) throw new Error(`${m.onnx}: no such file`);
    if (m.version !== undefined && !(Number.isInteger(m.version) && m.version >= 1 && m.version <= MAX_VERSION)) {
      throw new Error(`version ${m.version}: versions are whole numbers from 1 to ${MAX_VERSION}`);
    }
    const dir = path.join(repo, m.name);
    const taken = fs.existsSync(dir)
      ? fs
          .readdirSync(dir)
          .filter(d => VERSION_FOLDER.test(d))
          .map(Number)
      : [];
    const v = m.version ?? (taken.length ? Math.max(...taken) + 1 : 1);
    if (v > MAX_VERSION)
      throw new Error(
        `model ${m.name}: the next version would be ${v}, above the largest served version ${MAX_VERSION}`,
      );
    const target = path.join(dir, String(v));
    if (fs.existsSync(target) || planned.some(p => p.target === target)) throw new Error(`${target} already exists`);
    planned.push({ target, tmp: path.join(dir, `.tmp-${process.pid}-${Date.now()}-${planned.length}`), version: v });
  }
  const placed: typeof planned = [];
  try {
    models.forEach((m, i) => {
      const { tmp } = planned[i];
      fs.mkdirSync(tmp, { recursive: true });
      const file = path.join(tmp, 'model.onnx');
      fs.copyFileSync(m.onnx, file);
      const fd = fs.openSync(file, 'r');
      fs.fsyncSync(fd);
      fs.closeSync(fd);
    });
    for (const p of planned) {
      fs.renameSync(p.tmp, p.target);
      placed.push(p);
    }
  } catch (e) {
    for (const p of placed) fs.rmSync(p.target, { recursive: true, force: true });
    for (const p of planned) fs.rmSync(p.tmp, { recursive: true, force: true });
    throw e;
  }
  return planned.map(p => p.version);
}

/** Removes a model (every version) or one version; returns the removed folder. */
export function removeModel(repo: string, name: string, version?: number): string {
  checkName(name);
  const dir = path.join(repo, name);
  const target = version === undefined ? dir : path.join(dir, String(version));
  let st: fs.Stats;
  try {
    st = fs.lstatSync(target);
  } catch {
    throw new Error(`${target}: no such model${version === undefined ? '' : ' version'}`);
  }
  if (!st.isDirectory()) throw new Error(`${target}: not a model folder`);
  const gone = path.join(
    version === undefined ? repo : dir,
    `.removed-${process.pid}-${Date.now()}-${path.basename(target)}`,
  );
  fs.renameSync(target, gone);
  fs.rmSync(gone, { recursive: true, force: true });
  return target;
}

/** A model name from a run directory's name: characters outside the alphabet become '-'. */
export function modelNameFor(dir: string): string {
  return (
    path
      .basename(path.resolve(dir))
      .replace(/[^A-Za-z0-9_-]/g, '-')
      .slice(0, 128) || 'model'
  );
}

/**
 * Publishes a finished coordinator job's model (<jobOut>/model.onnx, the one-graph ensemble; jobOut is the
 * job's output directory) as <models>/<id>/1; does nothing when it is already there. Returns whether it published.
 */
export function publishJobModel(models: string, jobId: string, jobOut: string): boolean {
  const onnx = path.join(jobOut, 'model.onnx');
  const target = path.join(models, jobId, '1');
  if (fs.existsSync(target) || !fs.existsSync(onnx)) return false;
  addModelVersion(models, jobId, onnx, 1);
  return true;
}
