// The coordinator's worker registry: who announced itself (capabilities), who heartbeats, who is lost, bounded
// in size; exported as fleet_worker_info.
import { Device, type BodyMap } from '../bus/codec.ts';
import type { Rejections } from '../bus/receive.ts';
import { isId } from '../util/ids.ts';
import type { Metrics } from '../telemetry/metrics.ts';
import * as D from './defaults.ts';

export interface WorkerRecord {
  id: string;
  device: 'cpu' | 'cuda';
  gpu: string;
  threads: number;
  version: string;
  lastSeen: number;
  running: string[];
  state: 'idle' | 'busy' | 'lost';
  /** Its last heartbeat: a worker that only announced itself is never leased a task. */
  heartbeatAt?: number;
  /** Training images the worker reports having processed (from its heartbeats). */
  samplesProcessed?: number;
}

export class WorkerRegistry {
  /** By worker id (the Coordinator's public `workers`). */
  readonly map = new Map<string, WorkerRecord>();

  constructor(private readonly o: { rejections: Rejections; log: (line: string) => void; maxWorkers: number }) {}

  /** A worker's announcement: its record is created or refreshed; false when it was refused. */
  announce(a: BodyMap['announce'], sender: string): boolean {
    const { rejections } = this.o;
    if (!isId(a.workerId) || a.workerId.includes('.')) {
      rejections.reject('announce', 'bad_id', `worker id ${JSON.stringify(a.workerId)}`);
      return false;
    }
    if (sender !== a.workerId) {
      rejections.reject('announce', 'wrong_sender', `${sender} announced ${a.workerId}`);
      return false;
    }
    const w = this.map.get(a.workerId);
    if (!w && this.map.size >= this.o.maxWorkers && !this.forgetLostWorker()) {
      rejections.reject('announce', 'over_capacity', `${this.map.size} workers tracked; ${a.workerId} not added`);
      return false;
    }
    const record: WorkerRecord = {
      id: a.workerId,
      device: a.device === Device.CUDA ? 'cuda' : 'cpu',
      gpu: a.gpuName,
      threads: a.threads,
      version: a.version,
      lastSeen: Date.now(),
      heartbeatAt: w?.heartbeatAt,
      running: w?.running ?? [],
      state: w?.state === 'busy' ? 'busy' : 'idle',
    };
    if (!w) {
      const on = record.gpu ? ` on ${record.gpu}` : '';
      this.o.log(`worker ${a.workerId} joined (${record.device}${on}, ${a.threads} threads, fleet ${a.version})`);
    }
    this.map.set(a.workerId, record);
    return true;
  }

  /** The worker's side of a heartbeat (alive, what it runs); undefined when it is refused or not announced yet. */
  heartbeat(h: BodyMap['heartbeat'], sender: string, now: number): WorkerRecord | undefined {
    if (sender !== h.workerId) {
      this.o.rejections.reject('heartbeat', 'wrong_sender', `${sender} sent ${h.workerId}'s heartbeat`);
      return undefined;
    }
    const w = this.map.get(h.workerId);
    if (!w) return undefined; // announces come every few heartbeats: wait for one to learn the worker's capabilities
    if (w.state === 'lost') this.o.log(`worker ${w.id} is back`);
    w.lastSeen = w.heartbeatAt = now;
    w.running = h.runningTaskIds;
    w.samplesProcessed = h.samplesProcessed ?? 0;
    return w;
  }

  /** Marks workers silent for `timeout` ms lost, and forgets those lost for long. */
  prune(now: number, timeout: number): void {
    for (const w of this.map.values()) {
      if (w.state !== 'lost' && now - w.lastSeen > timeout) {
        w.state = 'lost';
        this.o.log(`worker ${w.id} lost (no heartbeat for ${Math.round((now - w.lastSeen) / 1000)} s)`);
      }
      if (w.state === 'lost' && now - w.lastSeen > D.FORGET_LOST_WORKER_MS) this.map.delete(w.id);
    }
  }

  /** Idle workers that heartbeat (within `timeout` ms): those that can be leased a task. */
  idle(now: number, timeout: number): WorkerRecord[] {
    return [...this.map.values()].filter(w => w.state === 'idle' && now - (w.heartbeatAt ?? -Infinity) <= timeout);
  }

  /** fleet_worker_info: one series per connected worker; a lost worker's series goes away. */
  exportInfo(metrics: Metrics): void {
    const info = metrics.workerInfo;
    info.reset();
    for (const w of this.map.values()) {
      if (w.state !== 'lost') info.set({ worker: w.id, device: w.device, gpu: w.gpu }, 1);
    }
  }

  /** Forgets the lost worker heard of longest ago; false when no worker is lost. */
  private forgetLostWorker(): boolean {
    let oldest: WorkerRecord | undefined;
    for (const w of this.map.values()) if (w.state === 'lost' && (!oldest || w.lastSeen < oldest.lastSeen)) oldest = w;
    if (oldest) this.map.delete(oldest.id);
    return !!oldest;
  }
}
