// Connecting the CLI to NATS: the URL from --nats, credentials from the environment (never from flags, so they
// stay out of process lists and shell history) or a creds file, TLS files from flags. Every option is checked
// before connecting: TLS options that could not take effect are usage errors, unreadable or unusable files
// fail at once naming the flag, and the URL's credentials are redacted wherever the URL is shown.
import * as fs from 'node:fs';
import * as tls from 'node:tls';
import { connectNats } from '../bus/nats-transport.ts';
import { intOption, UsageError, type OptionSpec } from '../util/args.ts';
import { redactUrl } from '../util/redact.ts';

export const NATS_OPTIONS = {
  nats: { type: 'string' },
  'nats-creds': { type: 'string' },
  'nats-ca': { type: 'string' },
  'nats-cert': { type: 'string' },
  'nats-key': { type: 'string' },
  'nats-wait-ms': { type: 'string' },
} as const satisfies OptionSpec;

/** --nats-wait-ms: the default start-up retry budget, and its bound. */
const WAIT_DEFAULT_MS = 5000;
const WAIT_MAX_MS = 600_000;

export const NATS_HELP = `  --nats URL          the NATS server, nats://host:4222 or tls://host:4222; credentials come
                      from NATS_USER and NATS_PASSWORD, or NATS_TOKEN, or NATS_NKEY_SEED in the
                      environment (or nats://user:password@host, shown only as nats://user:***@host)
  --nats-creds FILE   a NATS credentials (.creds) file
  --nats-ca FILE      CA certificate to verify the server (TLS)
  --nats-cert FILE    client certificate (TLS; needs --nats-key)
  --nats-key FILE     client key (TLS; needs --nats-cert)
  --nats-wait-ms N    keep trying to reach NATS this long at start-up, then exit (default ${WAIT_DEFAULT_MS})
`;

const SCHEMES = ['nats:', 'tls:'];

/** The connection settings the options and environment describe; throws a UsageError for impossible ones. */
export function natsSettings(values: Record<string, unknown>, env: NodeJS.ProcessEnv = process.env) {
  const url = String(values.nats);
  for (const server of url.split(',')) {
    let u: URL | null = null;
    try {
      u = new URL(server.trim());
    } catch {
      /* reported below */
    }
    if (!u || !SCHEMES.includes(u.protocol) || !u.hostname) {
      throw new UsageError(`--nats: expected nats://HOST:PORT or tls://HOST:PORT, got "${redactUrl(server)}"`);
    }
    if ((u.username || u.password) && (env.NATS_USER || env.NATS_TOKEN)) {
      throw new UsageError('--nats: the URL carries credentials and so does NATS_USER or NATS_TOKEN: give one');
    }
  }
  if (env.NATS_PASSWORD && !env.NATS_USER) throw new UsageError('NATS_PASSWORD is set without NATS_USER: set both');
  if (env.NATS_USER && !env.NATS_PASSWORD) throw new UsageError('NATS_USER is set without NATS_PASSWORD: set both');
  if (env.NATS_USER && env.NATS_TOKEN) throw new UsageError('NATS_USER and NATS_TOKEN are both set: give one');
  const [ca, cert, key] = ['nats-ca', 'nats-cert', 'nats-key'].map(f => values[f] as string | undefined);
  // a key without its certificate (or the reverse) would silently connect without a client certificate
  if (key !== undefined && cert === undefined) throw new UsageError('--nats-key: needs --nats-cert');
  if (cert !== undefined && key === undefined) throw new UsageError('--nats-cert: needs --nats-key');
  const tlsFiles = ca !== undefined || cert !== undefined ? { caFile: ca, certFile: cert, keyFile: key } : undefined;
  return {
    url,
    tls: tlsFiles,
    credsFile: values['nats-creds'] as string | undefined,
    waitMs: intOption(values, 'nats-wait-ms', WAIT_DEFAULT_MS, 0, WAIT_MAX_MS),
  };
}

/** Reads a file an option names; a failure is one line naming the option and the cause. */
function readOptionFile(flag: string, file: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const why =
      { ENOENT: 'no such file', EACCES: 'permission denied', EISDIR: 'is a directory' }[err.code ?? ''] ?? err.message;
    throw new Error(`--${flag} ${file}: cannot read it (${why})`);
  }
}

/** Checks the TLS and credentials files before connecting, so a bad one fails at once naming its flag. */
export function checkNatsFiles(s: ReturnType<typeof natsSettings>): void {
  if (s.tls?.caFile) {
    const ca = readOptionFile('nats-ca', s.tls.caFile);
    // Node.js skips text that is no PEM certificate without a word: look for one
    let why = /-----BEGIN CERTIFICATE-----/.test(ca.toString('latin1')) ? '' : 'no PEM certificate in it';
    try {
      if (!why) tls.createSecureContext({ ca });
    } catch (e) {
      why = (e as Error).message;
    }
    if (why) throw new Error(`--nats-ca ${s.tls.caFile}: not a usable CA certificate (${why})`);
  }
  if (s.tls?.certFile && s.tls.keyFile) {
    const cert = readOptionFile('nats-cert', s.tls.certFile),
      key = readOptionFile('nats-key', s.tls.keyFile);
    try {
      tls.createSecureContext({ cert, key });
    } catch (e) {
      const files = `--nats-cert ${s.tls.certFile} / --nats-key ${s.tls.keyFile}`;
      throw new Error(`${files}: not a usable certificate and key (${(e as Error).message})`);
    }
  }
  if (s.credsFile) {
    const text = readOptionFile('nats-creds', s.credsFile).toString('utf8');
    if (!/-----BEGIN NATS USER JWT-----/.test(text) || !/-----BEGIN USER NKEY SEED-----/.test(text)) {
      throw new Error(`--nats-creds ${s.credsFile}: not a NATS credentials file (no user JWT and nkey seed)`);
    }
  }
}

/** Each command's replies arrive under its own inbox prefix, the one its NATS user may subscribe to (nats.conf). */
export const inboxPrefix = (connectionName: string) => `_INBOX.${connectionName}`;

export function connectFromCli(values: Record<string, unknown>, name: string, log: (line: string) => void) {
  const env = process.env;
  const s = natsSettings(values, env);
  checkNatsFiles(s);
  return connectNats(s.url, {
    name,
    user: env.NATS_USER,
    pass: env.NATS_PASSWORD,
    token: env.NATS_TOKEN,
    nkeySeed: env.NATS_NKEY_SEED,
    credsFile: s.credsFile,
    tls: s.tls,
    connectWaitMs: s.waitMs,
    onStatus: e => log(`nats: ${e}`),
    inboxPrefix: inboxPrefix(name),
  });
}
