/**
 * A unified diff of two small texts (hosts.toml files: tens of lines), for
 * `configure --dry-run`. Longest common subsequence over lines; quadratic,
 * which is nothing at this size and keeps the output the familiar shape.
 */
function lines(text: string | null): string[] {
  if (text === null || text === '') return [];
  const parts = text.split('\n');
  if (parts[parts.length - 1] === '') parts.pop();
  return parts;
}

type Op = { kind: ' ' | '-' | '+'; line: string; a: number; b: number };

function ops(a: string[], b: string[]): Op[] {
  const n = a.length;
  const m = b.length;
  // lcs[i][j]: length of the LCS of a[i..] and b[j..]
  const lcs: number[][] = Array.from({ length: n + 1 }, () => new Array<number>(m + 1).fill(0));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lcs[i]![j] = a[i] === b[j] ? lcs[i + 1]![j + 1]! + 1 : Math.max(lcs[i + 1]![j]!, lcs[i]![j + 1]!);
    }
  }
  const out: Op[] = [];
  let i = 0;
  let j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && a[i] === b[j]) {
      out.push({ kind: ' ', line: a[i]!, a: i++, b: j++ });
    } else if (i < n && (j === m || lcs[i + 1]![j]! >= lcs[i]![j + 1]!)) {
      out.push({ kind: '-', line: a[i]!, a: i++, b: j });
    } else {
      out.push({ kind: '+', line: b[j]!, a: i, b: j++ });
    }
  }
  return out;
}

/** `--- old` / `+++ new` and `@@` hunks with `context` lines around each change; '' when equal. */
export function unifiedDiff(oldName: string, newName: string, before: string | null, after: string | null, context = 3): string {
  if (before === after) return '';
  const all = ops(lines(before), lines(after));
  const changed = all.map((o, k) => (o.kind === ' ' ? -1 : k)).filter((k) => k >= 0);
  if (changed.length === 0) return '';
  const out = [`--- ${before === null ? '/dev/null' : oldName}`, `+++ ${after === null ? '/dev/null' : newName}`];
  let k = 0;
  while (k < changed.length) {
    const start = Math.max(0, changed[k]! - context);
    let end = Math.min(all.length, changed[k]! + context + 1);
    while (k + 1 < changed.length && changed[k + 1]! - context <= end) {
      k++;
      end = Math.min(all.length, changed[k]! + context + 1);
    }
    k++;
    const hunk = all.slice(start, end);
    const aLen = hunk.filter((o) => o.kind !== '+').length;
    const bLen = hunk.filter((o) => o.kind !== '-').length;
    const first = hunk[0]!;
    const aStart = aLen === 0 ? first.a : first.a + 1;
    const bStart = bLen === 0 ? first.b : first.b + 1;
    out.push(`@@ -${aStart},${aLen} +${bStart},${bLen} @@`);
    for (const o of hunk) out.push(o.kind + o.line);
  }
  return out.join('\n') + '\n';
}
