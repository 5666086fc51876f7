// The coordinator's timings and bounds in one place, each with its unit. Options of the same name override them.

/** A lease (or a worker) not heard of for this long is lost: its task goes back to the queue (ms). */
export const WORKER_TIMEOUT_MS = 10_000;
/** A task that failed on this many attempts fails its job. */
export const MAX_ATTEMPTS = 3;
/** How often the coordinator expires leases and leases queued tasks (ms). */
export const TICK_MS = 250;
/** A lease this young counts as running on its worker even before a heartbeat lists it (ms). */
export const LEASE_IN_FLIGHT_MS = 2000;
/** A lease its worker's heartbeats have not listed for this long goes back to the queue (ms) ... */
export const LEASE_UNCONFIRMED_MS = 5000;
/** ... and that many of its heartbeats in a row have not listed it. */
export const LEASE_UNCONFIRMED_BEATS = 3;
/** A result whose transfer has not come this long after its TaskResult is given up; the task is leased again (ms). */
export const RESULT_TRANSFER_WAIT_MS = 2 * 60_000;
/** Completed transfers whose TaskResult has not arrived are kept this long (ms) ... */
export const UNCLAIMED_TRANSFER_MS = 5 * 60_000;
/** ... and up to this many bytes in all (the oldest go first). */
export const UNCLAIMED_TRANSFER_BYTES = 1024 * 1024 ** 2;
/** Unfinished chunked transfers: bytes in flight per sender and in all, and how long one may stay idle (ms). */
export const TRANSFER_BYTES_PER_SENDER = 512 * 1024 ** 2;
export const TRANSFER_BYTES_TOTAL = 2048 * 1024 ** 2;
export const TRANSFER_IDLE_MS = 30_000;
/** Workers tracked at once; beyond it lost ones are forgotten first, then announcements refused. */
export const MAX_WORKERS = 1000;
/** A lost worker is forgotten after this long (its metric series go with it) (ms). */
export const FORGET_LOST_WORKER_MS = 60 * 60_000;
/** Store writes: attempts, and the first retry delay, doubled on each retry (ms). */
export const WRITE_ATTEMPTS = 5;
export const WRITE_RETRY_MS = 500;
/** Data-parallel jobs: the parameter server is persisted every this many steps (and always at an epoch's end). */
export const DP_PERSIST_EVERY_STEPS = 20;
/** A data-parallel shard not answered for this long is assigned to another worker (ms). */
export const DP_SHARD_TIMEOUT_MS = 10 * 60_000;
/** Completed shard-result transfers kept while their DataParallelResult is awaited (the oldest go first). */
export const DP_RESULT_TRANSFERS = 256;
/** A job's history kept for `fleet jobs logs`: lines per job, and jobs whose history is kept. */
export const JOB_EVENTS = 200;
export const JOB_EVENT_JOBS = 200;
/** Jobs in one `fleet jobs list` answer (the newest), and the largest answer to an operator's question (bytes). */
export const JOBS_LISTED = 200;
export const JOBS_REPLY_BYTES = 256 * 1024;
/** An operator's question larger than this is dropped (bytes). */
export const JOBS_REQUEST_BYTES = 4096;
