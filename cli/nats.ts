// Connecting the CLI to NATS: the URL from --nats, credentials from the environment (never from flags, so they
// stay out of process lists and shell history) or a creds file, TLS files from flags.
import { connectNats } from '../bus/nats-transport.ts';
import type { OptionSpec } from '../util/args.ts';

export const NATS_OPTIONS = {
  nats: { type: 'string' }, 'nats-creds': { type: 'string' }, 'nats-ca': { type: 'string' }, 'nats-cert': { type: 'string' }, 'nats-key': { type: 'string' },
} as const satisfies OptionSpec;

export const NATS_HELP = `  --nats URL          the NATS server (nats://host:4222); credentials come from NATS_USER and
                      NATS_PASSWORD, or NATS_TOKEN, or NATS_NKEY_SEED in the environment
  --nats-creds FILE   a NATS credentials (.creds) file
  --nats-ca FILE      CA certificate to verify the server (TLS)
  --nats-cert FILE    client certificate (TLS)
  --nats-key FILE     client key (TLS)
`;

export function connectFromCli(values: Record<string, unknown>, name: string, log: (line: string) => void) {
  const env = process.env;
  const tls = values['nats-ca'] || values['nats-cert'] ? {
    caFile: values['nats-ca'] as string | undefined, certFile: values['nats-cert'] as string | undefined, keyFile: values['nats-key'] as string | undefined,
  } : undefined;
  return connectNats(values.nats as string, {
    name, user: env.NATS_USER, pass: env.NATS_PASSWORD, token: env.NATS_TOKEN, nkeySeed: env.NATS_NKEY_SEED,
    credsFile: values['nats-creds'] as string | undefined, tls, onStatus: e => log(`nats: ${e}`),
  });
}
