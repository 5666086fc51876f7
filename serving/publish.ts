// Putting a model into a repository so that a polling server picks it up whole: the version folder is built
// under a hidden temporary name and renamed into place (a rename is atomic), so a server never sees a
// half-copied model.onnx.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { MODEL_NAME } from './repository.ts';

/** Copies an .onnx file into <repo>/<name>/<version>/model.onnx (version: the next free number); returns the version. */
export function addModelVersion(repo: string, name: string, onnxFile: string, version?: number): number {
  if (!MODEL_NAME.test(name)) throw new Error(`model name ${JSON.stringify(name)}: use letters, digits, _ and - only (at most 128)`);
  if (!fs.existsSync(onnxFile)) throw new Error(`${onnxFile}: no such file`);
  const dir = path.join(repo, name);
  fs.mkdirSync(dir, { recursive: true });
  const taken = fs.readdirSync(dir).filter(d => /^[1-9]\d*$/.test(d)).map(Number);
  const v = version ?? (taken.length ? Math.max(...taken) + 1 : 1);
  const target = path.join(dir, String(v));
  if (fs.existsSync(target)) throw new Error(`${target} already exists`);
  const tmp = path.join(dir, `.tmp-${process.pid}-${Date.now()}`);
  fs.mkdirSync(tmp);
  try {
    fs.copyFileSync(onnxFile, path.join(tmp, 'model.onnx'));
    const fd = fs.openSync(path.join(tmp, 'model.onnx'), 'r');
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fs.renameSync(tmp, target);
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  return v;
}

/** A model name from a run directory's name: characters outside the alphabet become '-'. */
export function modelNameFor(dir: string): string {
  return path.basename(path.resolve(dir)).replace(/[^A-Za-z0-9_-]/g, '-').slice(0, 128) || 'model';
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
