// Leases of ensemble tasks: the per-task lease table fields (holder, attempt, token), granting, re-adopting,
// requeueing and expiring a lease, and the check that a message comes from the current lease holder. A lease's
// token is its secret: only messages carrying it count, and it is persisted so a restarted coordinator knows it.
import { randomBytes } from 'node:crypto';
import type { RejectReason } from '../bus/receive.ts';
import type { MemberTask } from '../engine/ensemble/tasks.ts';
import * as D from './defaults.ts';

export type TaskState = 'queued' | 'leased' | 'done' | 'failed' | 'cancelled';
export interface TaskRecord {
  task: MemberTask;
  state: TaskState;
  attempts: number;
  worker?: string;
  leasedAt?: number;
  error?: string;
  /** The current lease's secret: only messages carrying it count (persisted, so a restarted coordinator knows it). */
  token?: string;
  /** The token of the lease before the current one (restored when a worker refuses the current one as busy). */
  previousToken?: string;
  /** When a heartbeat of the lease holder last listed this lease, and how many of its heartbeats since did not. */
  confirmedAt?: number;
  missed?: number;
  /** The result transfer its TaskResult named, that payload's SHA-256 (hex), and when the TaskResult came. */
  transferId?: string;
  resultSha256?: string;
  resultAt?: number;
}

/** A new lease of `t` to `workerId`: the next attempt, with a fresh token (returned). */
export function grantLease(t: TaskRecord, workerId: string, now: number): string {
  t.state = 'leased';
  t.worker = workerId;
  t.leasedAt = now;
  t.confirmedAt = undefined;
  t.missed = 0;
  t.attempts++;
  t.previousToken = t.token; // a lapsed lease's token, given back if this lease is refused
  return (t.token = randomBytes(16).toString('hex'));
}

/** The holder of a queued task's last lease shows it still runs it (its token): it keeps it. */
export function readoptLease(t: TaskRecord, workerId: string): void {
  t.state = 'leased';
  t.worker = workerId;
  t.leasedAt = t.confirmedAt = Date.now();
  t.missed = 0;
}

/** Back to the queue; a lease that only lapsed (no word from its worker) keeps its token: its holder may reclaim it. */
export function unlease(t: TaskRecord, lapsed: boolean): void {
  t.state = 'queued';
  t.worker = undefined;
  t.transferId = undefined;
  t.resultSha256 = undefined;
  if (!lapsed) t.token = undefined; // the old lease's messages no longer count
}

/** The worker refused the lease as busy: not an attempt; the lease before it, if it only lapsed, is current again. */
export function refusedAsBusy(t: TaskRecord): void {
  t.attempts--;
  t.token = t.previousToken;
}

/** Why a leased task goes back to the queue on this tick (its result transfer or its holder went silent), or null. */
export function leaseExpiry(t: TaskRecord, now: number, timeout: number): { why: string; lapsed: boolean } | null {
  if (t.transferId) {
    if (now - (t.resultAt ?? 0) > D.RESULT_TRANSFER_WAIT_MS) {
      return { why: `its result transfer ${t.transferId} did not arrive`, lapsed: false };
    }
  } else if (now - (t.confirmedAt ?? t.leasedAt ?? 0) > timeout) {
    return { why: `no heartbeat of ${t.worker} listed it for ${Math.round(timeout / 1000)} s`, lapsed: true };
  }
  return null;
}

/** A heartbeat of the holder did not list the lease: true once it has not for several beats and a while. */
export function missedBeat(t: TaskRecord, now: number): boolean {
  t.missed = (t.missed ?? 0) + 1;
  return t.missed >= D.LEASE_UNCONFIRMED_BEATS && now - (t.confirmedAt ?? t.leasedAt ?? 0) > D.LEASE_UNCONFIRMED_MS;
}

/** Why a message naming `attempt` and `token` from `sender` is not from the holder of t's current lease, or null. */
export function leaseMismatch(
  t: TaskRecord,
  sender: string,
  attempt: number | undefined,
  token: string | undefined,
  what: string,
): { reason: RejectReason; detail: string } | null {
  if (t.state !== 'leased') return { reason: 'not_leased', detail: `${what}: the task is ${t.state}` };
  if (t.worker !== sender) return { reason: 'wrong_worker', detail: `${what}: leased to ${t.worker}` };
  if (attempt !== t.attempts) {
    return { reason: 'stale_attempt', detail: `${what}: attempt ${attempt}, current ${t.attempts}` };
  }
  if (!token || token !== t.token) return { reason: 'wrong_token', detail: what };
  return null;
}
