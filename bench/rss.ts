/**
 * Resident memory of a process from /proc/<pid>/status. VmHWM is the peak
 * since start or since the last reset (`5` written to /proc/<pid>/clear_refs,
 * Linux >= 4.0), so a peak can be measured for one phase of a long-running
 * daemon; a 50 ms VmRSS sampler runs beside it as a cross-check.
 */
import { readFileSync, writeFileSync } from 'node:fs';

export interface MemStatus {
  rssMiB: number;
  hwmMiB: number;
}

export function memStatus(pid: number): MemStatus {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (key: string): number => {
    const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text);
    if (!m) throw new Error(`/proc/${pid}/status has no ${key}`);
    return Number(m[1]);
  };
  return { rssMiB: kib('VmRSS') / 1024, hwmMiB: kib('VmHWM') / 1024 };
}

/** Resets VmHWM to the current RSS; false when the kernel or permissions do not allow it. */
export function resetPeak(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

/** Peak RSS of `pid` over a phase: max(VmHWM after a reset, sampled VmRSS). */
export class PeakRss {
  private maxSampled = 0;
  private readonly timer: NodeJS.Timeout;
  private readonly resetOk: boolean;

  constructor(private readonly pid: number) {
    this.resetOk = resetPeak(pid);
    this.sample();
    this.timer = setInterval(() => this.sample(), 50);
  }

  private sample(): void {
    try {
      this.maxSampled = Math.max(this.maxSampled, memStatus(this.pid).rssMiB);
    } catch {
      // the process is gone; the phase's caller will notice
    }
  }

  /** Stops sampling; the peak in MiB. */
  stop(): number {
    clearInterval(this.timer);
    this.sample();
    const hwm = this.resetOk ? memStatus(this.pid).hwmMiB : 0;
    return Math.max(hwm, this.maxSampled);
  }
}

/** Waits `ms` (idle on purpose: the bench measures what an idle daemon holds). */
export const idle = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Where berth's memory sits, from its own /metrics (prom-client's default Node metrics). */
export async function heapBreakdown(berthUrl: string): Promise<string> {
  const text = await (await fetch(`${berthUrl}/metrics`)).text();
  const mib = (name: string): string => {
    const m = new RegExp(`^${name}(?:\\{[^}]*\\})? ([\\d.e+]+)$`, 'm').exec(text);
    return m ? `${(Number(m[1]) / 2 ** 20).toFixed(0)} MiB` : '?';
  };
  return `V8 heap used ${mib('berth_nodejs_heap_size_used_bytes')} of ${mib('berth_nodejs_heap_size_total_bytes')}, external ${mib('berth_nodejs_external_memory_bytes')}, RSS ${mib('berth_process_resident_memory_bytes')}`;
}
