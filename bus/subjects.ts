// Every subject the cluster uses, in one place. Subjects are dot-separated tokens (NATS rules):
// `*` matches exactly one token, `>` matches one or more trailing tokens.
// Ids that become tokens (worker, job, transfer, model) are validated so an id can never add a
// level or act as a wildcard.

export const SUBJECTS = {
  /** A worker starting up (or reconnecting) announces its id and capabilities; the coordinator listens. */
  workerAnnounce: 'fleet.worker.announce',
  /** fleet.worker.heartbeat.<workerId>: periodic liveness and load of one worker. */
  workerHeartbeatPrefix: 'fleet.worker.heartbeat',
  /** Pattern the coordinator subscribes to for every worker's heartbeat. */
  workerHeartbeatAll: 'fleet.worker.heartbeat.*',
  /** fleet.task.lease.<workerId>: the coordinator hands one task to that worker (request/reply: the reply accepts it). */
  taskLeasePrefix: 'fleet.task.lease',
  /** A worker reports a finished (or failed) task; the coordinator that leased it takes it (others reject it as an unknown job). */
  taskResult: 'fleet.task.result',
  /** A worker's progress on a leased task, with its lease token, for the coordinator only (it republishes it, checked). */
  taskProgress: 'fleet.task.progress',
  /** fleet.job.progress.<jobId>: progress events of one job (epochs, metrics), for the CLI and dashboard. */
  jobProgressPrefix: 'fleet.job.progress',
  /** Pattern for the progress of every job. */
  jobProgressAll: 'fleet.job.progress.*',
  /** A client submits a job (JSON job spec, request/reply: the answer carries the job id or the error); coordinators take
   *  submissions in the queue group COORDINATOR_QUEUE, so that each job is accepted once. */
  jobSubmit: 'fleet.job.submit',
  /** fleet.job.done.<jobId>: the coordinator's last word on a job (JSON: ok and summary, or the error). */
  jobDonePrefix: 'fleet.job.done',
  /** fleet.job.result.<jobId>: a submitter asks for a job's outcome (request/reply; only its owner answers). */
  jobResultPrefix: 'fleet.job.result',
  /** fleet.task.cancel.<workerId>: the coordinator stops a task of a cancelled job on its lease holder (JSON: job,
   *  task, attempt, lease token; the worker checks them against the lease it runs). */
  taskCancelPrefix: 'fleet.task.cancel',
  /** Operators' questions to the coordinators (request/reply, JSON; see coordinator/jobs-api.ts): the jobs they
   *  own ... */
  jobsList: 'fleet.jobs.list',
  /** ... fleet.jobs.status.<jobId>: one job's state; only its owner answers ... */
  jobsStatusPrefix: 'fleet.jobs.status',
  /** ... fleet.jobs.logs.<jobId>: the job's recent events (bounded) ... */
  jobsLogsPrefix: 'fleet.jobs.logs',
  /** ... fleet.jobs.cancel.<jobId>: cancels the job (its queued tasks dropped, its running ones stopped). */
  jobsCancelPrefix: 'fleet.jobs.cancel',
  /** fleet.tensor.<transferId>: the chunks of one large tensor/model transfer (see bus/chunking.ts). */
  tensorPrefix: 'fleet.tensor',
  /** fleet.infer.<model>: inference requests for one model, answered by a queue group of servers. */
  inferPrefix: 'fleet.infer',
  /** Pattern for inference requests to any model. */
  inferAll: 'fleet.infer.*',
  /** fleet.dp.work.<workerId>: data-parallel shard work for one worker, preceded by its parameter/upstream chunks (ordered). */
  dpWorkPrefix: 'fleet.dp.work',
  /** fleet.dp.up.<jobId>: a worker's data-parallel results for one job, preceded by their tensor chunks (ordered). */
  dpUpPrefix: 'fleet.dp.up',
  /** fleet.dp.params.<jobId>: each new parameter version of a data-parallel job, chunked, for every worker at once. */
  dpParamsPrefix: 'fleet.dp.params',
  /** Pattern the workers subscribe to for every job's parameter versions. */
  dpParamsAll: 'fleet.dp.params.*',
  /** Pattern the coordinator subscribes to for every data-parallel job's results. */
  dpUpAll: 'fleet.dp.up.*',
} as const;

/** The queue group of coordinators on fleet.job.submit. */
export const COORDINATOR_QUEUE = 'fleet-coordinators';

/** Checks that an id can be used as one subject token: non-empty, no whitespace, dots or wildcards. */
export function subjectToken(id: string): string {
  if (typeof id !== 'string' || id.length === 0) throw new Error('subject token: id must be a non-empty string');
  if (id.length > 256) throw new Error(`subject token: id too long (${id.length} characters)`);
  if (/[\s.*>\u0000-\u001f\u007f]/.test(id)) {
    throw new Error(`subject token: id ${JSON.stringify(id)} must not contain whitespace, '.', '*' or '>'`);
  }
  return id;
}

export const workerHeartbeatSubject = (workerId: string) =>
  `${SUBJECTS.workerHeartbeatPrefix}.${subjectToken(workerId)}`;
export const taskLeaseSubject = (workerId: string) => `${SUBJECTS.taskLeasePrefix}.${subjectToken(workerId)}`;
export const jobProgressSubject = (jobId: string) => `${SUBJECTS.jobProgressPrefix}.${subjectToken(jobId)}`;
export const jobDoneSubject = (jobId: string) => `${SUBJECTS.jobDonePrefix}.${subjectToken(jobId)}`;
export const jobResultSubject = (jobId: string) => `${SUBJECTS.jobResultPrefix}.${subjectToken(jobId)}`;
export const taskCancelSubject = (workerId: string) => `${SUBJECTS.taskCancelPrefix}.${subjectToken(workerId)}`;
export const jobsStatusSubject = (jobId: string) => `${SUBJECTS.jobsStatusPrefix}.${subjectToken(jobId)}`;
export const jobsLogsSubject = (jobId: string) => `${SUBJECTS.jobsLogsPrefix}.${subjectToken(jobId)}`;
export const jobsCancelSubject = (jobId: string) => `${SUBJECTS.jobsCancelPrefix}.${subjectToken(jobId)}`;
export const tensorSubject = (transferId: string) => `${SUBJECTS.tensorPrefix}.${subjectToken(transferId)}`;
export const dpWorkSubject = (workerId: string) => `${SUBJECTS.dpWorkPrefix}.${subjectToken(workerId)}`;
export const dpParamsSubject = (jobId: string) => `${SUBJECTS.dpParamsPrefix}.${subjectToken(jobId)}`;
export const dpUpSubject = (jobId: string) => `${SUBJECTS.dpUpPrefix}.${subjectToken(jobId)}`;
export const inferSubject = (model: string) => `${SUBJECTS.inferPrefix}.${subjectToken(model)}`;

/**
 * Throws unless `subject` is well formed: non-empty tokens without whitespace. Wildcards are only
 * allowed when `wildcards` is set (subscriptions), and `>` only as the last token.
 */
export function validateSubject(subject: string, wildcards: boolean): void {
  if (typeof subject !== 'string' || subject.length === 0) throw new Error('invalid subject: empty');
  const tokens = subject.split('.');
  tokens.forEach((t, i) => {
    if (t.length === 0 || /\s/.test(t)) throw new Error(`invalid subject ${JSON.stringify(subject)}`);
    const wild = t === '*' || t === '>';
    if (wild && !wildcards)
      throw new Error(`invalid subject ${JSON.stringify(subject)}: wildcards are not allowed here`);
    if (t === '>' && i !== tokens.length - 1)
      throw new Error(`invalid subject ${JSON.stringify(subject)}: '>' must be last`);
  });
}

/** True when a concrete subject matches a subscription pattern (`*` one token, `>` one or more trailing tokens). */
export function subjectMatches(pattern: string, subject: string): boolean {
  const p = pattern.split('.');
  const s = subject.split('.');
  if (s.some(t => t.length === 0)) return false;
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '>') return i === p.length - 1 && s.length > i;
    if (i >= s.length) return false;
    if (p[i] !== '*' && p[i] !== s[i]) return false;
  }
  return p.length === s.length;
}
