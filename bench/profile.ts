/**
 * Summaries of V8 CPU profiles (`node --cpu-prof`, written by berth when it
 * exits): self time per function, summed over every profile given, so a
 * run that restarted berth many times (each cold run does) reads as one.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

export async function summarizeProfiles(files: readonly string[], top = 30): Promise<string> {
  const self = new Map<string, number>();
  let total = 0;
  for (const file of files) {
    const prof = JSON.parse(await readFile(file, 'utf8')) as CpuProfile;
    const byId = new Map(prof.nodes.map((n) => [n.id, n]));
    prof.samples.forEach((id, i) => {
      const us = prof.timeDeltas[i] ?? 0;
      const f = byId.get(id)?.callFrame;
      if (!f) return;
      const where = f.url ? `${f.url.replace(/^file:\/\//, '').replace(/.*node_modules\//, 'node_modules/')}:${f.lineNumber + 1}` : '';
      const key = `${f.functionName || '(anonymous)'} ${where}`.trim();
      self.set(key, (self.get(key) ?? 0) + us);
      total += us;
    });
  }
  const rows = [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, top);
  const lines = [
    `Self time over ${files.length} profile(s) (${files.map((f) => path.basename(f)).join(', ').slice(0, 300)}), ${(total / 1e6).toFixed(1)} s sampled:`,
    '',
    '| self ms | % | function |',
    '|---|---|---|',
    ...rows.map(([k, us]) => `| ${(us / 1000).toFixed(0)} | ${((100 * us) / total).toFixed(1)} | \`${k}\` |`),
  ];
  return lines.join('\n') + '\n';
}
