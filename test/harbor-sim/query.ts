/**
 * Harbor's list mechanics (reference §0): `page` (default 1) / `page_size` (default
 * 10, maximum 100, more → 422 from go-swagger validation), the `q=` query language
 * (k=v exact, k=~v fuzzy, k=[a~b] range, k={a b} or, k=(a b) and; comma-separated),
 * `sort=f1,-f2`, and the `X-Total-Count` / `Link` headers (H:src/server/v2.0/handler/base.go,
 * H:src/lib/q/builder.go). Keys the model does not know are ignored, as Harbor's ORM does.
 */
import { HarborError } from './http.js';

export interface Page {
  page: number;
  pageSize: number;
}

function int64Param(params: URLSearchParams, name: string, dflt: number): number {
  const raw = params.get(name);
  if (raw === null) return dflt;
  if (!/^-?\d+$/.test(raw)) {
    throw new HarborError('UNPROCESSABLE_ENTITY', `validation failure list:\n${name} in query must be of type int64: "${raw}"`);
  }
  return Number(raw);
}

export function parsePage(params: URLSearchParams): Page {
  const page = int64Param(params, 'page', 1);
  const pageSize = int64Param(params, 'page_size', 10);
  if (pageSize > 100) {
    throw new HarborError('UNPROCESSABLE_ENTITY', 'validation failure list:\npage_size in query should be less than or equal to 100');
  }
  return { page, pageSize };
}

export type Condition =
  | { kind: 'exact'; value: string }
  | { kind: 'fuzzy'; value: string }
  | { kind: 'range'; min?: string; max?: string }
  | { kind: 'or'; values: string[] }
  | { kind: 'and'; values: string[] };

const bad = (message: string): HarborError => new HarborError('BAD_REQUEST', message);

function parseValue(v: string): string {
  return v.trim().replace(/^["']+|["']+$/g, '');
}

function parseList(v: string, close: string): string[] {
  if (!v.endsWith(close)) throw bad(`invalid query string value: ${v}`);
  return v
    .slice(1, -1)
    .split(' ')
    .map(parseValue)
    .filter((s) => s.length > 0);
}

/** Parses `q` (already URL-decoded once by the query-string parser, as Go's is). */
export function parseQ(q: string | null): Map<string, Condition> {
  const out = new Map<string, Condition>();
  if (!q) return out;
  let text = q;
  try {
    // Go's QueryUnescape, applied once more by Harbor ("q=tags%3Dnil")
    text = decodeURIComponent(q.replace(/\+/g, ' '));
  } catch {
    // Harbor logs and keeps the raw string
  }
  for (const param of text.split(',')) {
    const eq = param.indexOf('=');
    const key = eq < 0 ? '' : param.slice(0, eq);
    const value = eq < 0 ? '' : param.slice(eq + 1);
    if (key.length === 0 || value.length === 0) throw bad('the query string must contain "=" and the key/value cannot be empty');
    switch (value[0]) {
      case '~':
        if (value.length < 2) throw bad(`invalid query string value: ${value}`);
        out.set(key, { kind: 'fuzzy', value: value.slice(1) });
        break;
      case '[': {
        if (!value.endsWith(']') || value.split('~').length !== 2) throw bad(`invalid query string value: ${value}`);
        const [min = '', max = ''] = value.slice(1, -1).split('~').map((s) => s.trim());
        if (!min && !max) throw bad(`invalid query string value: ${value}`);
        out.set(key, { kind: 'range', ...(min ? { min: parseValue(min) } : {}), ...(max ? { max: parseValue(max) } : {}) });
        break;
      }
      case '{':
        out.set(key, { kind: 'or', values: parseList(value, '}') });
        break;
      case '(':
        out.set(key, { kind: 'and', values: parseList(value, ')') });
        break;
      default:
        out.set(key, { kind: 'exact', value: value.startsWith('\\') ? value.slice(1) : value });
    }
  }
  return out;
}

/** Does a field value satisfy a condition? Values compare as numbers when both sides are numeric. */
export function matches(field: string | number | boolean | null | undefined, cond: Condition): boolean {
  if (field === null || field === undefined) return false;
  const s = String(field);
  const cmp = (a: string, b: string): number => {
    const na = Number(a);
    const nb = Number(b);
    if (a.trim() !== '' && b.trim() !== '' && !Number.isNaN(na) && !Number.isNaN(nb)) return na - nb;
    return a < b ? -1 : a > b ? 1 : 0;
  };
  switch (cond.kind) {
    case 'exact':
      return cmp(s, cond.value) === 0;
    case 'fuzzy':
      return s.includes(cond.value);
    case 'range':
      return (cond.min === undefined || cmp(s, cond.min) >= 0) && (cond.max === undefined || cmp(s, cond.max) <= 0);
    case 'or':
      return cond.values.some((v) => cmp(s, v) === 0);
    case 'and':
      return cond.values.every((v) => cmp(s, v) === 0);
  }
}

export type SortKey<T> = (item: T) => string | number;

/** `sort=f1,-f2` over the keys a model supports; unknown keys are ignored; `defaults` apply when none is given. */
export function sortItems<T>(items: T[], sort: string | null, keys: Record<string, SortKey<T>>, defaults: string): T[] {
  const spec = (sort && sort.length > 0 ? sort : defaults)
    .split(',')
    .map((s) => (s.startsWith('-') ? { key: s.slice(1), desc: true } : { key: s, desc: false }))
    .filter((s) => keys[s.key] !== undefined);
  return [...items].sort((a, b) => {
    for (const { key, desc } of spec) {
      const get = keys[key];
      if (!get) continue;
      const va = get(a);
      const vb = get(b);
      if (va === vb) continue;
      const r = va < vb ? -1 : 1;
      return desc ? -r : r;
    }
    return 0;
  });
}

/** One page; page_size 0 means everything (Harbor only limits when the size is positive). */
export function pageOf<T>(items: T[], p: Page): T[] {
  if (p.pageSize <= 0) return items;
  const start = p.pageSize * (Math.max(p.page, 1) - 1);
  return items.slice(start, start + p.pageSize);
}

/**
 * Harbor's Link header: the request URL with page/page_size rewritten, the query
 * re-encoded with sorted keys (Go's url.Values.Encode) and then unescaped; the links
 * joined by " , ". Undefined when there is neither a previous nor a next page.
 */
export function linkHeader(rawPath: string, params: URLSearchParams, total: number, p: Page): string | undefined {
  if (p.pageSize === 0) return undefined;
  const build = (page: number): string => {
    const q = new Map<string, string[]>();
    for (const [k, v] of params) q.set(k, [...(q.get(k) ?? []), v]);
    q.set('page', [String(page)]);
    q.set('page_size', [String(p.pageSize)]);
    const query = [...q.keys()]
      .sort()
      .flatMap((k) => (q.get(k) ?? []).map((v) => `${k}=${v}`))
      .join('&');
    return `<${rawPath}?${query}>`;
  };
  const links: string[] = [];
  if (p.page > 1 && (p.page - 1) * p.pageSize < total) links.push(`${build(p.page - 1)}; rel="prev"`);
  if (p.pageSize * p.page < total) links.push(`${build(p.page + 1)}; rel="next"`);
  return links.length > 0 ? links.join(' , ') : undefined;
}

/** X-Total-Count plus Link when there is one. */
export function listHeaders(rawPath: string, params: URLSearchParams, total: number, p: Page): Record<string, string> {
  const link = linkHeader(rawPath, params, total, p);
  return { 'X-Total-Count': String(total), ...(link ? { Link: link } : {}) };
}
