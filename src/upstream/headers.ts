/** Small readers for upstream response headers. */
import type { IncomingHttpHeaders } from 'node:http';

/** First value of a response header (undici gives an array for repeated ones). */
export function header(headers: IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** `Retry-After` as milliseconds from now: delta-seconds or an HTTP date (RFC 9110 §10.2.3). */
export function parseRetryAfter(value: string | undefined, now = Date.now()): number | undefined {
  if (value === undefined) return undefined;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const at = Date.parse(text);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, at - now);
}

/** `Content-Range: bytes <first>-<last>/<total|*>` of a 206 (RFC 9110 §14.4). */
export function parseContentRange(value: string | undefined): { first: number; last: number; total: number | undefined } | undefined {
  const m = value === undefined ? null : /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(value.trim());
  if (!m) return undefined;
  const first = Number(m[1]);
  const last = Number(m[2]);
  const total = m[3] === '*' ? undefined : Number(m[3]);
  if (last < first || (total !== undefined && last >= total)) return undefined;
  return { first, last, total };
}

/** A non-negative integer Content-Length, or undefined. */
export function contentLength(headers: IncomingHttpHeaders): number | undefined {
  const v = header(headers, 'content-length');
  if (v === undefined || !/^\d+$/.test(v.trim())) return undefined;
  return Number(v);
}
