// fleet's command-line entry point: dispatches to a command, prints usage errors as one line (exit 2)
// and other failures as one line (exit 1), and exits at once.
import { UsageError } from '../util/args.ts';
import { closest } from '../util/suggest.ts';
import { fleetVersion, versions } from '../util/versions.ts';
import { redactUrls } from '../util/redact.ts';

const USAGE = `fleet: train, ensemble and serve MNIST-style image classifiers on ONNX Runtime

usage:
  fleet train cnn [options]       train the CNN (fleet train cnn --help for options)
  fleet train simclr [options]    SimCLR pre-training + linear evaluation
  fleet train mil [options]       attention-based multiple instance learning on digit bags
  fleet data download|info        fetch or inspect an IDX data set (fleet data --help)
  fleet bench train|infer|augment training, inference and augmentation throughput (fleet bench --help)
  fleet bench serve               gRPC serving latency and throughput against in-process inference
  fleet bench scale               cluster scaling: ensemble speedup, data-parallel step overhead
  fleet bench mil-grid            MIL test AUC over training-set sizes, seeds and poolings
  fleet coordinator --nats URL    the cluster's coordinator (jobs, leases, state, dashboard, /metrics)
  fleet jobs list|status|watch|cancel|logs --nats URL   the cluster's jobs (fleet jobs --help)
  fleet worker --nats URL         a cluster worker (trains leased ensemble members; --http HOST:PORT)
  fleet serve --models DIR        KServe v2 gRPC inference over a model repository (fleet serve --help)
  fleet models add|list|remove    manage a model repository (fleet models --help)
  fleet predict --server HOST:PORT --model NAME (--image FILE.png | --idx FILE --index I)
  fleet eval MODEL.onnx|NAME [--server HOST:PORT]   accuracy, loss and confusion matrix on a whole test set
  fleet help                      this text
  fleet --version                 fleet's version (also: fleet version)

Ensemble jobs run on a cluster with fleet train cnn --members K --nats URL; one model trains
data-parallel with fleet train simclr --nats URL or fleet train cnn --data-parallel --nats URL.`;

const COMMANDS: Record<string, () => Promise<{ default: (argv: string[]) => Promise<void> }>> = {
  train: () => import('./train.ts'),
  data: async () => ({ default: (await import('./data.ts')).dataCommand }),
  bench: () => import('./bench.ts'),
  coordinator: () => import('./coordinator.ts'),
  worker: () => import('./worker.ts'),
  jobs: () => import('./jobs.ts'),
  serve: () => import('./serve.ts'),
  models: () => import('./models.ts'),
  predict: () => import('./predict.ts'),
  eval: () => import('./eval.ts'),
};

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === 'help' || cmd === '--help' || cmd === '-h') {
    console.log(USAGE);
    return 0;
  }
  if (cmd === '--version' || cmd === '-V' || cmd === 'version') {
    const v = versions();
    console.log(`fleet ${fleetVersion()} (node ${v.node}, onnxruntime-node ${v.onnxruntime_node})`);
    return 0;
  }
  const load = COMMANDS[cmd];
  if (!load) {
    const near = closest(cmd, [...Object.keys(COMMANDS), 'help', 'version']);
    throw new UsageError(`unknown command "${cmd}" (${near ? `did you mean "fleet ${near}"?` : 'try: fleet help'})`);
  }
  await (await load()).default(rest);
  return 0;
}

// A failure ends the process at once, whatever is still open (a NATS connection, a heartbeat timer, a listener
// that did bind): a command that cannot start must not linger half-started where a supervisor sees it as up.
main(process.argv.slice(2)).then(
  code => {
    process.exitCode = code;
  },
  (e: unknown) => {
    const err = e as Error;
    const code = e instanceof UsageError ? 2 : 1;
    const stack = process.env.FLEET_DEBUG && err.stack ? `${redactUrls(err.stack)}\n` : '';
    const text = `fleet: ${redactUrls(err.message ?? String(e))}\n${stack}`;
    process.stderr.write(text, () => process.exit(code));
    setTimeout(() => process.exit(code), 500).unref(); // in case stderr is a pipe nobody reads
  },
);
