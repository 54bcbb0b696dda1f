/**
 * RFC 9110 byte ranges for blob GETs. berth serves a single range (what
 * containerd sends to resume or to fetch chunks); a multi-range request is
 * answered with the whole blob, which RFC 9110 allows.
 */
export type RangeResult =
  | { kind: 'none' }
  | { kind: 'range'; start: number; end: number }
  | { kind: 'unsatisfiable' };

const MAX_HEADER = 200;

/** `size` is the blob's length; `end` in the result is inclusive. */
export function parseRange(header: string | undefined | null, size: number): RangeResult {
  if (header === undefined || header === null) return { kind: 'none' };
  const value = header.trim();
  // A syntactically invalid Range header is ignored (RFC 9110 §14.2).
  if (value.length > MAX_HEADER) return { kind: 'none' };
  const m = /^bytes=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(value);
  if (!m) return { kind: 'none' };
  // Leading zeros name the same number; past 16 digits a number is beyond 2^53, beyond any blob we hold.
  const a = (m[1] ?? '').replace(/^0+(?=\d)/, '');
  const b = (m[2] ?? '').replace(/^0+(?=\d)/, '');
  if (a === '' && b === '') return { kind: 'none' };
  if (a.length > 16) return { kind: 'unsatisfiable' };
  if (b.length > 16) {
    // A suffix that long is the whole blob; a last-pos that far is the rest of it (RFC 9110 §14.1.2).
    if (a === '') return size === 0 ? { kind: 'unsatisfiable' } : { kind: 'range', start: 0, end: size - 1 };
    const from = Number(a);
    return from >= size ? { kind: 'unsatisfiable' } : { kind: 'range', start: from, end: size - 1 };
  }
  if (a === '') {
    const suffix = Number(b);
    if (suffix === 0 || size === 0) return { kind: 'unsatisfiable' };
    return { kind: 'range', start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(a);
  if (start >= size) return { kind: 'unsatisfiable' };
  let end = b === '' ? size - 1 : Number(b);
  if (end < start) return { kind: 'none' };
  if (end >= size) end = size - 1;
  return { kind: 'range', start, end };
}

export function contentRange(start: number, end: number, size: number): string {
  return `bytes ${start}-${end}/${size}`;
}
