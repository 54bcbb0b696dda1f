/**
 * containerd's per-registry `hosts.toml`, as pure functions: parse what is on
 * disk, merge berth into it, render it back. containerd (docs/hosts.md) tries
 * the `[host."…"]` tables in file order and then `server`, so berth goes first
 * and whatever else an operator listed (MicroK8s' registry-1.docker.io, a
 * site mirror) stays behind it as the way out when berth cannot help.
 *
 * Rendering goes through smol-toml's `stringify`, which writes a table's plain
 * keys before its sub-tables and sub-tables in insertion order: `server` and
 * the other top-level keys come first, then one `[host."…"]` per host in the
 * order of `hosts`. Comments in the original do not survive a merge; the
 * original itself does, byte for byte, in the backup (see certs-dir.ts).
 */
import { parse, stringify } from 'smol-toml';

export type TomlTable = Record<string, unknown>;

export interface HostEntry {
  url: string;
  table: TomlTable;
}

/** A hosts.toml broken into what berth cares about, order kept. */
export interface HostsDoc {
  server: string | undefined;
  /** Top-level keys other than `server` and `host` (they configure the server: ca, header, …). */
  top: Array<[string, unknown]>;
  hosts: HostEntry[];
}

export class HostsTomlError extends Error {
  readonly code = 'HOSTS_TOML';
  constructor(
    readonly file: string,
    message: string,
  ) {
    super(`${file}: ${message}`);
    this.name = 'HostsTomlError';
  }
}

/** First line of every file berth writes; `--undo` only replaces files that still carry it. */
export const MANAGED_MARK = '# Managed by berth: written by `berth configure containerd`.';
const HEADER = [
  MANAGED_MARK,
  '# `berth configure containerd --undo` puts back what was here before.',
  '# containerd tries each [host."…"] below in order, then `server`.',
  '',
  '',
].join('\n');

/** Capabilities berth needs: "resolve" turns tags into digests through the mirror. */
export const BERTH_CAPABILITIES = ['pull', 'resolve'] as const;

function isTable(v: unknown): v is TomlTable {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

export function isManaged(text: string): boolean {
  return text.startsWith(MANAGED_MARK);
}

export function parseHostsToml(text: string, file: string): HostsDoc {
  let raw: TomlTable;
  try {
    raw = parse(text) as TomlTable;
  } catch (e) {
    throw new HostsTomlError(file, `not valid TOML (${(e as Error).message.split('\n')[0]})`);
  }
  const doc: HostsDoc = { server: undefined, top: [], hosts: [] };
  for (const [key, value] of Object.entries(raw)) {
    if (key === 'server') {
      if (typeof value !== 'string') throw new HostsTomlError(file, '`server` must be a string URL');
      doc.server = value;
    } else if (key === 'host') {
      if (!isTable(value)) throw new HostsTomlError(file, '`host` must be a table of [host."<url>"] tables');
      for (const [url, table] of Object.entries(value)) {
        if (!isTable(table)) throw new HostsTomlError(file, `host ${JSON.stringify(url)} must be a table`);
        doc.hosts.push({ url, table });
      }
    } else {
      doc.top.push([key, value]);
    }
  }
  return doc;
}

/** scheme://host:port/path with default ports and a trailing slash dropped; the string itself if it is no URL. */
export function normalizeUrl(u: string): string {
  try {
    const url = new URL(u);
    return `${url.protocol}//${url.host}${url.pathname.replace(/\/+$/, '')}`;
  } catch {
    return u.replace(/\/+$/, '');
  }
}

export function sameUrl(a: string, b: string): boolean {
  return normalizeUrl(a) === normalizeUrl(b);
}

export interface MergeOptions {
  /** Where containerd reaches berth, e.g. "http://127.0.0.1:5050". */
  berthUrl: string;
  /** Berth becomes `server` and the only host: a refused pull cannot fall through. */
  noFallback: boolean;
  /** `server` for a file that names none (a new one): the upstream berth itself fetches from. */
  fallbackServer: string | undefined;
  /** `ca = …` on berth's host table (an HTTPS berth with a private CA). */
  ca?: string;
  /** The upstream's private CA (its `ca_file`): containerd needs it to use the fallback `server`. */
  serverCa?: string;
}

export interface MergeResult {
  doc: HostsDoc;
  /** What the merge removed or replaced, for the operator (each a sentence). */
  notes: string[];
}

/**
 * Puts berth first. With a fallback, every other host and `server` stay as
 * they were (a `server` that is berth itself, left by an earlier
 * --no-fallback, is replaced by `fallbackServer`). Without one, berth is the
 * `server` and the only host: containerd 1.6 rejects a file with `server` but
 * no host table and silently pulls from the registry itself, so berth is named
 * in both places; other hosts and server-level keys would be ways around berth
 * and are dropped (the backup keeps them).
 */
export function mergeBerth(existing: HostsDoc | null, opts: MergeOptions): MergeResult {
  const notes: string[] = [];
  const current: HostsDoc = existing ?? { server: undefined, top: [], hosts: [] };
  const mine = current.hosts.find((h) => sameUrl(h.url, opts.berthUrl));
  const others = current.hosts.filter((h) => h !== mine);

  const table: TomlTable = { capabilities: [...BERTH_CAPABILITIES] };
  for (const [k, v] of Object.entries(mine?.table ?? {})) if (k !== 'capabilities') table[k] = v;
  if (opts.ca !== undefined) table.ca = opts.ca;
  const berth: HostEntry = { url: opts.berthUrl, table };

  if (opts.noFallback) {
    for (const h of others) notes.push(`removed host ${h.url}: with --no-fallback berth is the only host`);
    if (current.server !== undefined && !sameUrl(current.server, opts.berthUrl)) {
      notes.push(`replaced server ${current.server} with berth (--no-fallback)`);
    }
    for (const [k] of current.top) notes.push(`removed top-level ${k}: it configured the old server`);
    return { doc: { server: opts.berthUrl, top: [], hosts: [berth] }, notes };
  }

  let server = current.server;
  if (server !== undefined && sameUrl(server, opts.berthUrl)) {
    server = opts.fallbackServer;
    notes.push(`server is berth (an earlier --no-fallback): set back to ${server ?? "containerd's default"}`);
  } else if (existing === null) {
    server = opts.fallbackServer;
  }
  let top = current.top;
  // A private-CA upstream kept as fallback: containerd must trust it too, or the fallback is dead.
  if (opts.serverCa !== undefined && server !== undefined && opts.fallbackServer !== undefined && sameUrl(server, opts.fallbackServer) && !top.some(([k]) => k === 'ca')) {
    top = [...top, ['ca', opts.serverCa]];
    notes.push(`the fallback server is verified with ${opts.serverCa} (the upstream's ca_file)`);
  }
  return { doc: { server, top, hosts: [berth, ...others] }, notes };
}

export function renderHostsToml(doc: HostsDoc): string {
  const obj: TomlTable = {};
  if (doc.server !== undefined) obj.server = doc.server;
  for (const [k, v] of doc.top) obj[k] = v;
  if (doc.hosts.length > 0) {
    const host: TomlTable = {};
    for (const h of doc.hosts) host[h.url] = h.table;
    obj.host = host;
  }
  return HEADER + stringify(obj);
}

/** The host URLs containerd would try, in order, `server` last. */
export function endpoints(doc: HostsDoc): string[] {
  const list = doc.hosts.map((h) => h.url);
  if (doc.server !== undefined) list.push(doc.server);
  return list;
}
