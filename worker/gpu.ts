// The GPU a CUDA worker runs on, for its announcement and the coordinator's fleet_worker_info metric:
// nvidia-smi when it is there, else the NVIDIA driver's /proc files; '' when there is no NVIDIA GPU.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

/** How long nvidia-smi may take to answer before the probe falls back to the /proc files (ms). */
const NVIDIA_SMI_TIMEOUT_MS = 5000;

export interface GpuProbe {
  /** The nvidia-smi command (default: looked up on the PATH). */
  nvidiaSmi?: string;
  /** The driver's per-GPU folder (default /proc/driver/nvidia/gpus). */
  procDir?: string;
}

/** The name of the first NVIDIA GPU (e.g. "NVIDIA H200"), or '' when none is visible. */
export function detectGpuName(probe: GpuProbe = {}): string {
  return fromNvidiaSmi(probe.nvidiaSmi ?? 'nvidia-smi') || fromProc(probe.procDir ?? '/proc/driver/nvidia/gpus');
}

function fromNvidiaSmi(cmd: string): string {
  try {
    const out = execFileSync(cmd, ['--query-gpu=name', '--format=csv,noheader'], {
      encoding: 'utf8',
      timeout: NVIDIA_SMI_TIMEOUT_MS,
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    return (
      out
        .split('\n')
        .map(l => l.trim())
        .find(l => l !== '') ?? ''
    );
  } catch {
    return ''; // not installed, no driver, or no GPU
  }
}

/** Each GPU has a folder (its PCI address) with an `information` file holding a "Model:  NAME" line. */
function fromProc(dir: string): string {
  let entries: string[];
  try {
    entries = fs.readdirSync(dir).sort();
  } catch {
    return '';
  }
  for (const e of entries) {
    try {
      const m = /^Model:\s*(.+?)\s*$/m.exec(fs.readFileSync(path.join(dir, e, 'information'), 'utf8'));
      if (m) return m[1];
    } catch {
      /* unreadable entry: try the next */
    }
  }
  return '';
}
