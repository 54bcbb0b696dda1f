/**
 * CPU time a server spends, from /proc: utime + stime of the process (all
 * its threads: libuv's pool, worker_threads, Go's Ms) and cutime + cstime
 * (children it has reaped), plus the same for every live descendant (found
 * through /proc/<pid>/task/<tid>/children). Read before and after a phase,
 * the difference divided by the bytes served in it is the CPU-seconds per
 * GiB served. The kernel counts in clock ticks (`getconf CLK_TCK`, 100 here:
 * 10 ms), so a phase should take a few hundred ms of CPU or more.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';

let ticksPerSecond: number | undefined;

function clockTicks(): number {
  if (ticksPerSecond === undefined) {
    let n = Number.NaN;
    try {
      n = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
    } catch {
      // no getconf: Linux's USER_HZ is 100 on every common architecture
    }
    ticksPerSecond = Number.isFinite(n) && n > 0 ? n : 100;
  }
  return ticksPerSecond;
}

/** utime + stime + cutime + cstime of `pid` alone, in ticks; null when it is gone. */
function ownTicks(pid: number): number | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // The command name is in parentheses and may hold spaces: the fields start after the last ')'.
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // f[0] is field 3 (state); utime, stime, cutime, cstime are fields 14-17.
  return Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
}

function children(pid: number): number[] {
  const out: number[] = [];
  let tasks: string[];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tasks) {
    try {
      for (const c of readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').split(' ')) {
        if (c.trim() !== '') out.push(Number(c));
      }
    } catch {
      // the thread ended meanwhile
    }
  }
  return out;
}

/** CPU-seconds used so far by `pid` and its descendants (live ones, and reaped ones through cutime/cstime). */
export function cpuSeconds(pid: number): number {
  let ticks = 0;
  const todo = [pid];
  const seen = new Set<number>();
  while (todo.length > 0) {
    const p = todo.pop()!;
    if (seen.has(p)) continue;
    seen.add(p);
    const t = ownTicks(p);
    if (t === null) continue;
    ticks += t;
    todo.push(...children(p));
  }
  return ticks / clockTicks();
}

/** One phase's CPU-seconds of some processes: read at construction and at stop(). */
export class CpuMeter {
  private readonly before: Map<number, number>;

  constructor(private readonly pids: readonly number[]) {
    this.before = new Map(pids.map((p) => [p, cpuSeconds(p)]));
  }

  /** CPU-seconds spent since the constructor, by all the processes together. */
  stop(): number {
    return this.pids.reduce((s, p) => s + cpuSeconds(p) - this.before.get(p)!, 0);
  }
}

/** CPU-seconds per GiB. */
export const perGiB = (cpuS: number, bytes: number): number => cpuS / (bytes / 2 ** 30);
