// fleet's Prometheus metrics, defined in one place so that the code, the Grafana dashboard, the alert rules
// and the tests agree on names. Each process (coordinator, worker, `fleet serve`) makes its own registry
// with createMetrics(); tests can run several in one process. Conventions: `fleet_` prefix, base units
// (seconds, bytes), `_total` for counters, label values from small fixed sets (or ids of live workers/jobs,
// whose series are removed when the worker or job goes away).
import * as client from 'prom-client';

const STEP_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const LATENCY_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5];
const BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512];

export function createMetrics(opts: { defaultMetrics?: boolean; labels?: Record<string, string> } = {}) {
  const registry = new client.Registry();
  if (opts.labels) registry.setDefaultLabels(opts.labels);
  if (opts.defaultMetrics ?? true) {
    client.collectDefaultMetrics({ register: registry });
    // gauges named like counters, which `promtool check metrics` rejects; nodejs_active_{handles,requests,resources}
    // (by type) carry the same numbers
    for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'])
      registry.removeSingleMetric(name);
  }
  const registers = [registry];
  const gauge = <L extends string>(name: string, help: string, labelNames: readonly L[] = []) =>
    new client.Gauge<L>({ name, help, labelNames, registers });
  const counter = <L extends string>(name: string, help: string, labelNames: readonly L[] = []) =>
    new client.Counter<L>({ name, help, labelNames, registers });
  const histogram = <L extends string>(name: string, help: string, buckets: number[], labelNames: readonly L[] = []) =>
    new client.Histogram<L>({ name, help, buckets, labelNames, registers });

  return {
    registry,
    // cluster (coordinator)
    workersConnected: gauge('fleet_workers_connected', 'Workers currently connected (heartbeating), by device.', [
      'device',
    ] as const),
    tasks: gauge('fleet_tasks', 'Tasks of live jobs by state (queued, leased, done, failed).', ['state'] as const),
    jobs: gauge('fleet_jobs', 'Jobs by state (running, done, failed, cancelled).', ['state'] as const),
    taskRetries: counter(
      'fleet_task_retries_total',
      'Tasks leased again after their worker was lost or their attempt failed.',
    ),
    // fleet's job id is `fleet_job`: Prometheus reserves `job` for the scrape job (and renames ours exported_job)
    jobProgress: gauge('fleet_job_progress_ratio', 'Fraction of a running job that is done (0-1).', [
      'fleet_job',
    ] as const),
    coordinatorLeader: gauge(
      'fleet_coordinator_leader',
      '1 while this coordinator holds the leader lease (it leads), 0 while it is a standby.',
      ['coordinator'] as const,
    ),
    stateWriteFailures: counter(
      'fleet_state_write_failures_total',
      'Job state writes (records, results, data-parallel checkpoints) that failed after every retry.',
    ),
    // training (workers, and the coordinator for the jobs it tracks)
    trainingStep: histogram(
      'fleet_training_step_duration_seconds',
      'Duration of one training step (forward, backward, update).',
      STEP_BUCKETS,
      ['model'] as const,
    ),
    samples: counter(
      'fleet_samples_processed_total',
      'Training images processed (a SimCLR image counts once, not per view).',
      ['model'] as const,
    ),
    loss: gauge('fleet_training_loss', 'Latest loss per job, member and split (train, val, test).', [
      'fleet_job',
      'member',
      'split',
    ] as const),
    accuracy: gauge('fleet_training_accuracy_ratio', 'Latest accuracy (0-1) per job, member and split.', [
      'fleet_job',
      'member',
      'split',
    ] as const),
    gradientAggregation: histogram(
      'fleet_gradient_aggregation_duration_seconds',
      "Parameter server: time to sum the workers' gradients and step the optimizer.",
      STEP_BUCKETS,
    ),
    // the bus
    busBytes: counter(
      'fleet_bus_bytes_total',
      'Bytes published or received on the bus, by direction (in, out) and message kind.',
      ['direction', 'kind'] as const,
    ),
    busMessages: counter(
      'fleet_bus_messages_total',
      'Messages published or received on the bus, by direction (in, out) and message kind.',
      ['direction', 'kind'] as const,
    ),
    malformed: counter(
      'fleet_bus_malformed_messages_total',
      'Messages dropped because they failed to decode or validate, by expected kind.',
      ['kind'] as const,
    ),
    rejected: counter(
      'fleet_bus_rejected_total',
      'Bus messages dropped, by expected kind and reason (malformed, wrong_token, stale_attempt, spec_mismatch, over_capacity, ...: a fixed set, bus/receive.ts).',
      ['kind', 'reason'] as const,
    ),
    reassemblyFailures: counter(
      'fleet_chunk_reassembly_failures_total',
      'Chunked transfers that failed their length, count or checksum check, or timed out.',
    ),
    // serving
    inferRequests: counter(
      'fleet_inference_requests_total',
      'Inference requests by model, version (empty when none resolved) and gRPC status name (OK, NOT_FOUND, ...).',
      ['model', 'version', 'status'] as const,
    ),
    inferLatency: histogram(
      'fleet_inference_request_duration_seconds',
      'Inference request latency, from arrival to answer.',
      LATENCY_BUCKETS,
      ['model', 'version'] as const,
    ),
    inferQueue: histogram(
      'fleet_inference_queue_duration_seconds',
      'Time a request waited in the dynamic batcher before its batch ran.',
      LATENCY_BUCKETS,
      ['model'] as const,
    ),
    inferBatchSize: histogram(
      'fleet_inference_batch_size',
      'Images per session run after dynamic batching.',
      BATCH_BUCKETS,
      ['model'] as const,
    ),
    membersUnavailable: counter(
      'fleet_ensemble_members_unavailable_total',
      'Ensemble members that did not answer an inference request in time.',
      ['model'] as const,
    ),
    // per-worker summary re-exposed by the coordinator (one scrape target is enough for the embedded default)
    workerHeartbeatAge: gauge(
      'fleet_worker_heartbeat_age_seconds',
      'Seconds since the coordinator last heard from a worker.',
      ['worker', 'device'] as const,
    ),
    workerBusy: gauge('fleet_worker_busy', '1 while a worker runs a task, 0 when idle.', ['worker', 'device'] as const),
    workerSamples: gauge(
      'fleet_worker_samples_processed',
      'Training images a worker reports having processed since it started.',
      ['worker', 'device'] as const,
    ),
    // deploy: which GPU each worker runs on (set by the coordinator from the workers' announcements)
    workerInfo: gauge(
      'fleet_worker_info',
      '1 for each connected worker, labelled with its device and GPU model (gpu is empty on CPU workers).',
      ['worker', 'device', 'gpu'] as const,
    ),
    // serving: the model repository (serving/repository.ts)
    modelLoadFailures: counter(
      'fleet_model_load_failures_total',
      'Model versions in the repository that failed to load (truncated, corrupt or unsupported files, bad configs).',
      ['model'] as const,
    ),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;

/** The Prometheus exposition text of a registry (what /metrics serves). */
export async function exposition(m: Metrics): Promise<{ contentType: string; body: string }> {
  return { contentType: m.registry.contentType, body: await m.registry.metrics() };
}
