// `fleet models add`: puts a run's model into a model repository (atomically: a polling server never sees a
// half-copied file).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parse, intOption, UsageError } from '../util/args.ts';
import { addModelVersion, modelNameFor } from '../serving/publish.ts';

const HELP = `usage: fleet models add RUN_DIR|FILE.onnx --models DIR [--name NAME] [--version N] [--members]

Copies RUN_DIR/model.onnx (what fleet train --out writes; for an ensemble the one-graph model) into
DIR/NAME/VERSION/model.onnx, where fleet serve --models DIR picks it up without a restart.

options:
  --models DIR   the model repository (required)
  --name NAME    the model name (default: the run directory's name)
  --version N    the version number (default: one more than the highest there)
  --members      also add an ensemble run's members (RUN_DIR/members/M/model.onnx) as models NAME-M, e.g. to
                 host them on other servers as remote members of a fan-out ensemble
  -h, --help     this text
`;

export const OPTIONS = {
  models: { type: 'string' }, name: { type: 'string' }, version: { type: 'string' }, members: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
} as const;

export default async function models(argv: string[]): Promise<void> {
  const { values, positionals } = parse(argv, OPTIONS);
  if (values.help) { process.stdout.write(HELP); return; }
  const [sub, src, ...extra] = positionals;
  if (sub !== 'add') throw new UsageError(`models: expected "add", got ${sub ? `"${sub}"` : 'nothing'} (try: fleet models --help)`);
  if (!src) throw new UsageError('models add: RUN_DIR or FILE.onnx is required');
  if (extra.length) throw new UsageError(`models add: unexpected argument "${extra[0]}"`);
  if (!values.models) throw new UsageError('models add: --models DIR is required');
  const isFile = src.endsWith('.onnx');
  const onnx = isFile ? src : path.join(src, 'model.onnx');
  if (!fs.existsSync(onnx)) throw new Error(`${onnx}: no such file (expected a fleet train --out directory or an .onnx file)`);
  const name = (values.name as string | undefined) ?? modelNameFor(isFile ? path.dirname(src) : src);
  const version = values.version === undefined ? undefined : intOption(values, 'version', 1, 1);
  try {
    const v = addModelVersion(values.models as string, name, onnx, version);
    process.stdout.write(`added ${name} version ${v} (${path.join(values.models as string, name, String(v))})\n`);
    if (values.members) {
      const dir = path.join(src, 'members');
      if (!fs.existsSync(dir)) throw new Error(`${dir}: no members (not an ensemble run?)`);
      for (const m of fs.readdirSync(dir).sort()) {
        const file = path.join(dir, m, 'model.onnx');
        if (!fs.existsSync(file)) continue;
        const mv = addModelVersion(values.models as string, `${name}-${m}`, file);
        process.stdout.write(`added ${name}-${m} version ${mv}\n`);
      }
    }
  } catch (e) {
    if ((e as Error).message.startsWith('model name')) throw new UsageError((e as Error).message);
    throw e;
  }
}
