/**
 * Results as rows of (measure, berth, peer, ratio, target), written as JSON
 * and as a Markdown table. The ratio is always berth's median divided by the
 * peer's median, of the unit the row names; `better` says which way is good.
 * Targets are checked on the ratio or on berth's own median, as the issue
 * states them; a missed target is reported, never an exit code.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Summary } from './stats.js';

export interface Target {
  /**
   * What the target bounds: the ratio, berth's median in the row's unit, or
   * the excess (berth's median minus the peer's, in the row's unit).
   */
  on: 'ratio' | 'berth' | 'excess';
  op: '>=' | '<=' | '==';
  value: number;
}

export interface Row {
  measure: string;
  what: string;
  unit: string;
  better: 'higher' | 'lower';
  berth: Summary;
  /** What the berth column holds when it is not berth (a ceiling measured in the same run): named in the cell. */
  subject?: string;
  peer?: { name: string; value: Summary };
  target?: Target;
  note?: string;
  /** Filled in by `finish`. */
  ratio?: number;
  /** berth's median minus the peer's (rows with an `excess` target). */
  excess?: number;
  met?: boolean;
}

export interface Machine {
  nproc: number;
  cpu: string;
  memoryGiB: number;
  node: string;
  kernel: string;
  loadavg: number[];
}

export interface Report {
  date: string;
  mode: 'full' | 'quick';
  durationS: number;
  machine: Machine;
  rows: Row[];
  failures: Array<{ measure: string; error: string }>;
  notes: string[];
}

export function machine(): Machine {
  return {
    nproc: os.availableParallelism(),
    cpu: os.cpus()[0]?.model ?? 'unknown',
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    kernel: os.release(),
    loadavg: os.loadavg().map((x) => Math.round(x * 100) / 100),
  };
}

function holds(v: number, t: Target): boolean {
  if (t.op === '>=') return v >= t.value;
  if (t.op === '<=') return v <= t.value;
  return v === t.value;
}

/** Computes the ratio and whether the target is met. */
export function finish(row: Row): Row {
  if (row.peer && row.peer.value.median !== 0) row.ratio = row.berth.median / row.peer.value.median;
  if (row.peer && row.target?.on === 'excess') row.excess = row.berth.median - row.peer.value.median;
  if (row.target) {
    const v = row.target.on === 'ratio' ? row.ratio : row.target.on === 'excess' ? row.excess : row.berth.median;
    if (v !== undefined) row.met = holds(v, row.target) && (row.target.op !== '==' || (row.berth.min === row.target.value && row.berth.max === row.target.value));
  }
  return row;
}

function fmt(v: number): string {
  const a = Math.abs(v);
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1);
  if (a === Math.round(a)) return v.toFixed(0);
  return v.toFixed(2);
}

const cell = (s: Summary, unit: string): string => (s.min === s.max ? `${fmt(s.median)} ${unit}` : `${fmt(s.median)} ${unit} (${fmt(s.min)}–${fmt(s.max)})`);

function targetText(row: Row): string {
  const t = row.target;
  if (!t) return '';
  const op = t.op === '==' ? '=' : t.op === '>=' ? '≥' : '≤';
  if (t.on === 'excess') return `${op} peer + ${fmt(t.value)} ${row.unit}`;
  return t.on === 'ratio' ? `${op} ${fmt(t.value)}x` : `${op} ${fmt(t.value)} ${row.unit}`;
}

export function markdown(r: Report): string {
  const m = r.machine;
  const lines = [
    `# berth benchmark (${r.mode} run)`,
    '',
    `${r.date}; ${m.nproc} cores (${m.cpu}), ${m.memoryGiB} GiB, Node ${m.node}, Linux ${m.kernel}; load average at the end ${m.loadavg.join(' ')}; took ${Math.round(r.durationS)} s.`,
    'Values are the median of the runs with (min–max); the ratio is berth ÷ peer of the medians; ↑ higher is better, ↓ lower is better.',
    '',
    '| measure | what | berth | peer | ratio | target | met |',
    '|---|---|---|---|---|---|---|',
  ];
  for (const row of r.rows) {
    const arrow = row.better === 'higher' ? '↑' : '↓';
    const peer = row.peer ? `${row.peer.name}: ${cell(row.peer.value, row.unit)}` : '';
    const excess = row.excess === undefined ? '' : ` (${row.excess >= 0 ? '+' : ''}${fmt(row.excess)} ${row.unit})`;
    const ratio = row.ratio === undefined ? '' : `${fmt(row.ratio)}x${excess}`;
    const met = row.met === undefined ? '' : row.met ? 'met' : '**missed**';
    lines.push(`| ${row.measure} | ${row.what} ${arrow}${row.note ? ` (${row.note})` : ''} | ${row.subject ? `${row.subject}: ` : ''}${cell(row.berth, row.unit)} | ${peer} | ${ratio} | ${targetText(row)} | ${met} |`);
  }
  if (r.failures.length > 0) {
    lines.push('', '## Measures that could not run', '');
    for (const f of r.failures) lines.push(`- ${f.measure}: ${f.error.split('\n')[0]}`);
  }
  if (r.notes.length > 0) {
    lines.push('', '## Notes', '');
    for (const n of r.notes) lines.push(`- ${n}`);
  }
  return lines.join('\n') + '\n';
}

export async function writeReport(dir: string, r: Report): Promise<{ json: string; md: string }> {
  await mkdir(dir, { recursive: true });
  const json = path.join(dir, 'latest.json');
  const md = path.join(dir, 'latest.md');
  await writeFile(json, JSON.stringify(r, null, 2) + '\n');
  await writeFile(md, markdown(r));
  return { json, md };
}
