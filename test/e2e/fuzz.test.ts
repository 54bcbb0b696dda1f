/**
 * Hostile input: a seeded fuzz run of FUZZ_REQUESTS (default 10,000) requests
 * against a running berth with a real upstream behind it. Requests are
 * written byte for byte on raw keep-alive sockets (no client library to tidy
 * them up): random and mutated paths, methods, header sizes past Node's
 * 16 KiB limit, `ns` values, percent-encoding, invalid UTF-8 in the target,
 * `..` traversal, absurd Range headers, smuggling-shaped framing headers.
 *
 * Asserted: berth never answers 500 or any 5xx other than 502/503, and those
 * only for well-formed GET/HEAD registry requests, where the upstream is
 * involved (503: it cannot be reached; 502: it answered something berth could
 * not use, e.g. Distribution's own 400 for a `n` it rejects on tags/list:
 * the fault is the upstream's answer, not berth's, and a 4xx would claim the
 * client's request was wrong when berth could not know). Every error body is
 * the OCI envelope and no stack trace. Nothing hangs; the process survives
 * (/healthz 200 at the end); RSS stays bounded; nothing outside the cache dir
 * is created or changed (a canary is planted beside it); inside it, only
 * berth's own layout appears; and the cached image still pulls byte-exact.
 *
 * The seed is printed; FUZZ_SEED=<n> replays a run.
 */
import t from 'tap';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { startTokenServer } from '../harness/token-server.js';
import { startRegistry } from '../harness/registry.js';
import { makeImage, pushImage, readBlob } from '../harness/images.js';
import { startBerth } from '../harness/berth.js';
import { tempDirFor } from '../harness/procs.js';
import { fetchOnce, outcomeOf } from '../harness/fault-proxy.js';
import { treeSnapshot } from '../harness/cache-state.js';

const TOTAL = Number(process.env.FUZZ_REQUESTS ?? 10_000);
const WORKERS = 16;
const REQUEST_TIMEOUT_MS = 30_000;

interface Answer {
  status: number;
  headers: Map<string, string>;
  body: Buffer;
  /** The connection may carry another request. */
  reusable: boolean;
}

/** One keep-alive connection that reads responses as bytes, framing them itself. */
class RawConnection {
  private buf: Buffer = Buffer.alloc(0);
  private closed = false;
  private wake: (() => void) | null = null;
  readonly socket: net.Socket;

  constructor(port: number) {
    this.socket = net.connect(port, '127.0.0.1');
    this.socket.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.wake?.();
    });
    const end = (): void => {
      this.closed = true;
      this.wake?.();
    };
    this.socket.on('end', end);
    this.socket.on('close', end);
    this.socket.on('error', end);
  }

  get usable(): boolean {
    return !this.closed && !this.socket.destroyed;
  }

  private async more(deadline: number): Promise<boolean> {
    if (this.closed) return false;
    const left = deadline - Date.now();
    if (left <= 0) throw new Error('timeout');
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, left);
      this.wake = () => {
        clearTimeout(timer);
        this.wake = null;
        resolve();
      };
    });
    return true;
  }

  /** Sends `raw` and reads one response; null when the server closed without one. */
  async exchange(raw: Buffer, method: string): Promise<Answer | null> {
    const deadline = Date.now() + REQUEST_TIMEOUT_MS;
    this.socket.write(raw);
    for (;;) {
      let head = this.buf.indexOf('\r\n\r\n');
      while (head < 0) {
        if (!(await this.more(deadline)) && this.buf.indexOf('\r\n\r\n') < 0) return null;
        head = this.buf.indexOf('\r\n\r\n');
      }
      const lines = this.buf.subarray(0, head).toString('latin1').split('\r\n');
      this.buf = this.buf.subarray(head + 4);
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '');
      if (!m) throw new Error(`not an HTTP response: ${JSON.stringify(lines[0])}`);
      const status = Number(m[1]);
      const headers = new Map<string, string>();
      for (const l of lines.slice(1)) {
        const i = l.indexOf(':');
        if (i > 0) headers.set(l.slice(0, i).trim().toLowerCase(), l.slice(i + 1).trim());
      }
      if (status === 100) continue;
      let body: Buffer = Buffer.alloc(0);
      if (method !== 'HEAD' && status !== 204 && status !== 304) {
        if ((headers.get('transfer-encoding') ?? '').toLowerCase().includes('chunked')) body = await this.chunked(deadline);
        else if (headers.has('content-length')) body = await this.exactly(Number(headers.get('content-length')), deadline);
        else {
          while (await this.more(deadline));
          body = this.buf;
          this.buf = Buffer.alloc(0);
        }
      }
      // Bytes after the response mean one request was parsed as two (a CR or LF in the target): never reuse such a connection.
      const reusable = this.usable && this.buf.length === 0 && (headers.get('connection') ?? '').toLowerCase() !== 'close' && lines[0]!.startsWith('HTTP/1.1');
      return { status, headers, body, reusable };
    }
  }

  private async exactly(n: number, deadline: number): Promise<Buffer> {
    while (this.buf.length < n) if (!(await this.more(deadline))) throw new Error(`body cut short: ${this.buf.length} of ${n}`);
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  private async chunked(deadline: number): Promise<Buffer> {
    const parts: Buffer[] = [];
    for (;;) {
      let eol = this.buf.indexOf('\r\n');
      while (eol < 0) {
        if (!(await this.more(deadline))) throw new Error('chunked body cut short');
        eol = this.buf.indexOf('\r\n');
      }
      const size = parseInt(this.buf.subarray(0, eol).toString('latin1'), 16);
      this.buf = this.buf.subarray(eol + 2);
      const chunk = await this.exactly(size + 2, deadline);
      if (size === 0) return Buffer.concat(parts);
      parts.push(chunk.subarray(0, size));
    }
  }

  close(): void {
    this.socket.destroy();
  }
}

function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? 0);
}


/** Paths under the cache dir that are not berth's own layout. */
function strangers(cacheDir: string): string[] {
  const allowed = [/^index\.db(-wal|-shm)?$/, /^blobs\/sha256\/[0-9a-f]{2}\/[0-9a-f]{64}$/, /^tmp\/[0-9a-f]{64}\.[0-9a-f]+\.part$/, /^quarantine\/[0-9a-f]{64}\.\d+$/];
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else {
        const rel = path.relative(cacheDir, p);
        if (!allowed.some((re) => re.test(rel))) out.push(rel);
      }
    }
  };
  walk(cacheDir);
  return out;
}

const STACK_RE = /\n\s+at [^\n]+:\d+:\d+/;

t.test('a fuzz run against a live berth', async (t) => {
  const seed = Number(process.env.FUZZ_SEED ?? randomBytes(4).readUInt32LE(0));
  t.comment(`FUZZ_SEED=${seed} (${TOTAL} requests)`);

  const token = await startTokenServer(t, { users: { pusher: 'push-secret' } });
  const registry = await startRegistry(t, { token });
  const work = await tempDirFor(t, 'berth-fuzz');
  const img = await makeImage(path.join(work, 'img'), { layers: 2, layerSize: 30_000, seed: 'fuzz', tag: 'v1' });
  await pushImage(img.layoutDir, 'v1', registry, 'library/fuzz:v1', { creds: 'pusher:push-secret' });
  const blobs = [...img.manifests[0]!.layers, img.manifests[0]!.config];
  const berth = await startBerth(t, { upstreams: [{ registry: 'docker.io', url: registry.url }] });

  // Warm: the image is cached, so fuzzed reads of it hit the disk path (ranges included).
  t.equal((await fetchOnce(`${berth.url}/v2/library/fuzz/manifests/v1?ns=docker.io`)).status, 200);
  for (const d of blobs) t.equal((await fetchOnce(`${berth.url}/v2/library/fuzz/blobs/${d}?ns=docker.io`)).status, 200);

  const parent = path.dirname(berth.cacheDir);
  const canary = path.join(parent, 'canary.txt');
  fs.writeFileSync(canary, `canary ${seed}\n`);
  const before = treeSnapshot(parent, berth.cacheDir);
  const rssBefore = rssKiB(berth.service.pid);

  const rand = prng(seed);
  const known = { manifest: img.manifestDigest, blobs };
  const requests: FuzzRequest[] = Array.from({ length: TOTAL }, () => generateRequest(rand, known, berth.host));
  const statuses = new Map<number, number>();
  const bound = new Map<number, number>();
  const codes = new Map<string, number>();
  const failures: string[] = [];
  let noAnswer = 0;
  let nextIndex = 0;
  const started = Date.now();

  const fail = (r: FuzzRequest, why: string): void => {
    if (failures.length < 25) failures.push(`${why} <- ${JSON.stringify(r.raw.subarray(0, 400).toString('latin1'))}`);
    else if (failures.length === 25) failures.push('… more');
  };

  const worker = async (): Promise<void> => {
    let conn: RawConnection | null = null;
    for (;;) {
      const i = nextIndex++;
      const r = requests[i];
      if (!r) break;
      if (!conn || !conn.usable) {
        conn?.close();
        conn = new RawConnection(berth.port);
      }
      let a: Answer | null;
      try {
        a = await conn.exchange(r.raw, r.method);
      } catch (err) {
        fail(r, `no complete answer: ${(err as Error).message}`);
        conn.close();
        conn = null;
        continue;
      }
      if (!a) {
        noAnswer++;
        if (!r.mayCloseSilently) fail(r, 'connection closed without an answer');
        conn.close();
        conn = null;
        continue;
      }
      statuses.set(a.status, (statuses.get(a.status) ?? 0) + 1);
      if (r.upstreamBound) bound.set(a.status, (bound.get(a.status) ?? 0) + 1);
      const text = a.body.toString('utf8');
      let code: string | undefined;
      if (a.status >= 400 && a.body.length > 0) {
        try {
          code = (JSON.parse(text) as { errors?: Array<{ code?: string }> }).errors?.[0]?.code;
        } catch {
          code = undefined;
        }
        if (code === undefined) fail(r, `${a.status} without the OCI error envelope: ${text.slice(0, 120)}`);
      }
      if (a.status >= 400) codes.set(`${a.status} ${code ?? '(no body)'}`, (codes.get(`${a.status} ${code ?? '(no body)'}`) ?? 0) + 1);
      if (STACK_RE.test(text)) fail(r, `a stack trace in the body: ${text.slice(0, 200)}`);
      if (a.status >= 500) {
        const gateway = (a.status === 502 && (code === undefined || code === 'BAD_GATEWAY')) || (a.status === 503 && (code === undefined || code === 'UNAVAILABLE'));
        if (!gateway || !r.upstreamBound) fail(r, `${a.status} ${code ?? ''}${r.upstreamBound ? '' : ' for a request that never needed the upstream'}`);
      }
      if (!a.reusable || !r.reusable) {
        conn.close();
        conn = null;
      }
    }
    conn?.close();
  };
  await Promise.all(Array.from({ length: WORKERS }, () => worker()));
  const elapsed = Date.now() - started;

  const summary = [...statuses].sort((a, b) => a[0] - b[0]).map(([s, n]) => `${s}:${n}`).join(' ');
  const boundSummary = [...bound].sort((a, b) => a[0] - b[0]).map(([s, n]) => `${s}:${n}`).join(' ');
  t.comment(`${TOTAL} requests in ${elapsed} ms; statuses ${summary}; closed without an answer: ${noAnswer}`);
  t.comment(`errors: ${[...codes].sort((a, b) => b[1] - a[1]).map(([c, n]) => `${c}: ${n}`).join(', ')}`);
  t.comment(`well-formed registry requests for a mirrored registry (may reach the upstream): ${boundSummary}`);
  t.same(failures, [], `no 500, no unexplained 5xx, no stack trace, every error in the envelope, nothing unanswered (FUZZ_SEED=${seed})`);

  t.notOk(berth.service.hasExited(), 'berth is alive');
  t.equal((await fetchOnce(`${berth.url}/healthz`)).status, 200, '/healthz 200 at the end');
  const rssAfter = rssKiB(berth.service.pid);
  t.comment(`RSS ${Math.round(rssBefore / 1024)} MiB before, ${Math.round(rssAfter / 1024)} MiB after`);
  t.ok(rssAfter < rssBefore + 150 * 1024, `RSS bounded (${Math.round(rssBefore / 1024)} -> ${Math.round(rssAfter / 1024)} MiB)`);

  const after = treeSnapshot(parent, berth.cacheDir);
  t.equal(fs.readFileSync(canary, 'utf8'), `canary ${seed}\n`, 'the canary beside the cache dir is untouched');
  t.same([...after.keys()].sort(), [...before.keys()].sort(), 'no file created or removed beside the cache dir');
  t.same([...after].filter(([p, v]) => before.get(p) !== v).map(([p]) => p), [], 'no file beside the cache dir changed');
  t.same(strangers(berth.cacheDir), [], 'inside the cache dir: only berth\'s own layout');

  const m = await fetchOnce(`${berth.url}/v2/library/fuzz/manifests/v1?ns=docker.io`);
  t.equal(m.status, 200, 'the cached image still resolves');
  for (const d of blobs) {
    t.equal(outcomeOf(await fetchOnce(`${berth.url}/v2/library/fuzz/blobs/${d}?ns=docker.io`), await readBlob(img.layoutDir, d)), 'exact', `blob ${d.slice(7, 19)} still byte-exact`);
  }
});

// ---------------------------------------------------------------------------
// The generator. Pure functions of the PRNG, so a seed replays a run exactly.

/** mulberry32 */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = Math.imul(a ^ (a >>> 15), 1 | a);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

type Rand = () => number;
const pick = <T>(rand: Rand, xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
const int = (rand: Rand, n: number): number => Math.floor(rand() * n);
const chance = (rand: Rand, p: number): boolean => rand() < p;
const hex = (rand: Rand, n: number): string => Array.from({ length: n }, () => '0123456789abcdef'[int(rand, 16)]).join('');
const fromSet = (rand: Rand, set: string, n: number): string => Array.from({ length: n }, () => set[int(rand, set.length)]).join('');

interface FuzzRequest {
  raw: Buffer;
  method: string;
  /** A well-formed GET/HEAD registry request for a mirrored registry: the upstream may be asked, so 502/503 are honest. */
  upstreamBound: boolean;
  /** Node may drop the connection without an answer (CONNECT nobody handles; headers far past the limit, reset while we still write). */
  mayCloseSilently: boolean;
  /** False when a CR or LF in the target may make Node see two requests (two answers): the connection is closed after it. */
  reusable: boolean;
}

const VALID_NAMES = ['library/fuzz', 'fuzz', 'library/missing', 'a/b/c', 'team-1/app', 'x__y/z.z', 'ns/deep/er/name'];
const HOSTILE_NAMES = [
  'UPPER', 'a//b', '..', 'a/../b', '%2e%2e', 'a/%2e%2e/b', '.hidden', 'a_', 'a'.repeat(300), '-a', 'a..b', 'a/./b', 'a%2fb',
  '..%2f..%2fcanary.txt', '..\\..\\canary.txt', 'a;b', 'a@b', '', '/', 'canary.txt/../..', '%252e%252e', '..%00', 'a%0d%0ab', '~root', 'library/fuzz/..',
];
const HOSTILE_TAGS = ['a'.repeat(200), '..', '.x', '-x', '%00', 'tag%20x', '', 'v1%2f..', 'v1;rm', '\u00fc', '%ff%fe', '%c3%28'];
const HOSTILE_DIGESTS = [
  'sha256:../../canary.txt', 'sha256:%2e%2e%2fcanary.txt', 'sha256:', ':', 'sha256:' + 'A'.repeat(64), 'sha512:' + 'a'.repeat(128), 'md5:abc',
  'sha256:' + 'a'.repeat(63), 'sha256:' + 'a'.repeat(65), 'sha256:' + 'g'.repeat(64), 'SHA256:' + 'a'.repeat(64), 'sha256+b64:abc=',
];
const OTHER_TARGETS = [
  '/v2', '/v2/', '/v2/_catalog', '/metrics', '/healthz', '/readyz', '/', '/favicon.ico', '/v1/_ping', '*', 'http://evil.example.com/v2/',
  '//etc/passwd', '/../../etc/passwd', '/v2/../metrics', '/V2/', '/v2//', '/v2/%2e%2e/%2e%2e/canary.txt', '/v3/whatever', '/v2/a/blobs/uploads/',
];
const GOOD_NS = ['docker.io', 'docker.io', 'docker.io', 'DOCKER.IO', 'index.docker.io', 'registry-1.docker.io', 'docker%2eio'];
const NS_VALUES = [
  'evil.example.com', '127.0.0.1:1', 'localhost',
  '', 'a b', '%00', 'x'.repeat(300), 'docker.io/../x', 'docker.io:99999', '[::1]', 'http://docker.io', 'docker.io%00.evil',
];
const ACCEPTS = [
  '*/*', 'application/vnd.oci.image.index.v1+json', 'application/vnd.oci.image.manifest.v1+json', 'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.index.v1+json;q=0.5', 'text/html', '', ';;;,,,', 'a/b;q=abc',
  Array.from({ length: 300 }, (_, i) => `application/x-${i}+json`).join(', '),
];
const RANGES = [
  'bytes=0-0', 'bytes=-1', 'bytes=0-', 'bytes=10-20', 'bytes=99999999999999999999-', 'bytes=-99999999999999999999', 'bytes=5-1', 'bytes=0-1,2-3',
  'bytes=' + Array.from({ length: 1000 }, (_, i) => `${i}-${i}`).join(','), 'items=0-1', 'bytes=--', 'bytes=1e3-', 'bytes=0x10-', 'bytes=  1 - 2 ',
  '', 'bytes=-0', 'bytes=-', 'bytes=9007199254740993-9007199254740999', 'bytes=0-9007199254740993', 'bytes=-1-2', 'BYTES=0-0', 'bytes=0-0,-1',
];
const METHODS = ['POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'TRACE', 'PROPFIND', 'get', 'GeT', 'FOO', 'M-SEARCH', 'CONNECT', 'G'.repeat(100)];
const MIRRORED = new Set(['docker.io', 'index.docker.io', 'registry-1.docker.io']);

const COMPONENT = '[a-z0-9]+(?:(?:\\.|_|__|-+)[a-z0-9]+)*';
/** The distribution-spec grammar, written out here again so the test does not judge berth with berth's own parser. */
const REGISTRY_PATH = new RegExp(
  `^/v2/(?=.{1,255}/(?:manifests|blobs|tags)/)${COMPONENT}(?:/${COMPONENT})*/(?:manifests/(?:[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}|sha256:[a-f0-9]{64})|blobs/sha256:[a-f0-9]{64}|tags/list)$`,
);

function name(rand: Rand): string {
  const r = rand();
  if (r < 0.7) return pick(rand, VALID_NAMES);
  if (r < 0.82) return Array.from({ length: 1 + int(rand, 3) }, () => fromSet(rand, 'abcdefghijklmnopqrstuvwxyz0123456789._-', 1 + int(rand, 12))).join('/');
  return pick(rand, HOSTILE_NAMES);
}

function reference(rand: Rand, known: { manifest: string; blobs: string[] }, blob: boolean): string {
  const r = rand();
  if (r < 0.45) return blob ? pick(rand, known.blobs) : pick(rand, ['v1', 'v1', 'latest', 'missing', known.manifest]);
  if (r < 0.55) return `sha256:${hex(rand, 64)}`;
  if (r < 0.65 && !blob) return fromSet(rand, 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-', 1 + int(rand, 40)).replace(/^[.-]/, 'x');
  if (r < 0.8) return pick(rand, HOSTILE_DIGESTS);
  return pick(rand, HOSTILE_TAGS);
}

function target(rand: Rand, known: { manifest: string; blobs: string[] }): string {
  const r = rand();
  let p: string;
  if (r < 0.4) p = `/v2/${name(rand)}/manifests/${reference(rand, known, false)}`;
  else if (r < 0.75) p = `/v2/${name(rand)}/blobs/${reference(rand, known, true)}`;
  else if (r < 0.85) p = `/v2/${name(rand)}/tags/list`;
  else if (r < 0.9) p = `/v2/${name(rand)}/blobs/uploads/${chance(rand, 0.5) ? hex(rand, 32) : ''}`;
  else p = pick(rand, OTHER_TARGETS);
  const params: string[] = [];
  if (chance(rand, 0.6)) params.push(`ns=${pick(rand, chance(rand, 0.7) ? GOOD_NS : NS_VALUES)}`);
  if (chance(rand, 0.05)) params.push(`ns=${pick(rand, NS_VALUES)}`);
  if (p.endsWith('/tags/list') && chance(rand, 0.5)) params.push(`n=${pick(rand, ['1', '0', '-1', 'abc', '99999999999999999999', '10'])}`, `last=${pick(rand, ['v1', '', '%00', 'zzz'])}`);
  if (chance(rand, 0.05)) params.push(pick(rand, ['', '&', '=', '==', 'a=%', 'x=%zz', '%%%', 'ns']));
  let out = params.length ? `${p}?${params.join('&')}` : p;
  if (chance(rand, 0.02)) out += '#frag';
  return mutate(rand, out);
}

function mutate(rand: Rand, s: string): string {
  if (!chance(rand, 0.3)) return s;
  let out = s;
  for (let n = 1 + int(rand, 3); n > 0; n--) {
    const at = int(rand, out.length + 1);
    // Cases 5, 6, 9 and 10 put bytes in the target that Node's parser itself refuses (400 before berth sees it): keep them a minority.
    switch (chance(rand, 0.2) ? pick(rand, [5, 6, 9, 10]) : pick(rand, [0, 1, 2, 3, 4, 7, 8])) {
      case 0: out = out.slice(0, at) + pick(rand, ['/', '.', '%', '%2f', '%2e', '\\', ';', '@', ':', '?', '&', '#', '%25', '+']) + out.slice(at); break;
      case 1: out = out.slice(0, at) + out.slice(at + 1); break;
      case 2: out = out.slice(0, at) + encodeURIComponent(out.charAt(at) || 'a').replace(/^([^%])$/, (c) => `%${c.charCodeAt(0).toString(16)}`) + out.slice(at + 1); break;
      case 3: out = out.slice(0, at) + out.charAt(at).toUpperCase() + out.slice(at + 1); break;
      case 4: out = out.replace(/\//, pick(rand, ['/../', '/./', '/%2e%2e/', '//'])); break;
      case 5: out = out.slice(0, at) + String.fromCharCode(0x80 + int(rand, 0x80)) + out.slice(at); break; // a lone byte >= 0x80: invalid UTF-8
      case 6: out = out.slice(0, at) + String.fromCharCode(int(rand, 0x20)) + out.slice(at); break; // a control byte
      case 7: out = out.slice(0, at) + out.slice(Math.max(0, at - 10), at) + out.slice(at); break;
      case 8: out = out.replace(/\//g, (m) => (chance(rand, 0.3) ? '%2F' : m)); break;
      case 9: out = out.slice(0, at) + ' ' + out.slice(at); break;
      default: out = out.slice(0, at) + '\u00c3\u00a9' + out.slice(at); break; // valid UTF-8 'é' as raw bytes
    }
  }
  return out;
}

function generateRequest(rand: Rand, known: { manifest: string; blobs: string[] }, hostHeader: string): FuzzRequest {
  const m = rand();
  const method = m < 0.6 ? 'GET' : m < 0.8 ? 'HEAD' : pick(rand, METHODS);
  const tgt = target(rand, known);
  const version = rand() < 0.95 ? 'HTTP/1.1' : pick(rand, ['HTTP/1.0', 'HTTP/2.0', 'HTTP/1.1x', 'FOO', 'HTTP/0.9']);
  const headers: string[] = [];
  let wellFramed = true;
  const host = rand() < 0.92 ? hostHeader : pick(rand, ['', 'evil.example.com', 'a b', 'x'.repeat(300), '[::1]', null]);
  if (host !== null) headers.push(`Host: ${host}`);
  if (host !== hostHeader) wellFramed = false;
  if (chance(rand, 0.5)) headers.push(`Accept: ${pick(rand, ACCEPTS)}`);
  if (chance(rand, 0.3)) headers.push(`Range: ${pick(rand, RANGES)}`);
  if (chance(rand, 0.1)) headers.push(`X-Request-Id: ${pick(rand, ['ok-id-1', 'x'.repeat(100), '../../etc', '<script>', 'a b', '\u00ff\u00fe'])}`);
  if (chance(rand, 0.05)) headers.push(`Authorization: ${pick(rand, ['Basic ' + 'a'.repeat(50), 'Bearer x.y.z', 'Basic !!!', 'Digest foo', ''])}`);
  if (chance(rand, 0.05)) headers.push('Connection: close');
  if (chance(rand, 0.02)) for (let i = 0; i < 200 + int(rand, 1800); i++) headers.push(`X-Many-${i}: ${i}`);
  let pad = 0;
  const padRoll = rand();
  if (padRoll < 0.03) pad = 16_000 + int(rand, 1_000);
  else if (padRoll < 0.05) pad = 17_000 + int(rand, 10_000);
  else if (padRoll < 0.06) pad = 70_000;
  else if (padRoll < 0.12) pad = int(rand, 8_000);
  if (pad > 0) headers.push(`X-Pad: ${'p'.repeat(pad)}`);
  let body = '';
  const framing = rand();
  if (framing < 0.04) {
    headers.push('Content-Length: 5');
    body = 'hello';
  } else if (framing < 0.06) {
    headers.push('Transfer-Encoding: chunked');
    body = '5\r\nhello\r\n0\r\n\r\n';
  } else if (framing < 0.07) {
    headers.push('Content-Length: 5', 'Transfer-Encoding: chunked');
    body = '5\r\nhello\r\n0\r\n\r\n';
    wellFramed = false;
  } else if (framing < 0.08) {
    headers.push(pick(rand, ['Content-Length: abc', 'Content-Length: 1, 2', 'Content-Length: -1', 'Transfer-Encoding: gzip, chunked, identity']));
    wellFramed = false;
  } else if (framing < 0.09) {
    headers.push('Expect: 100-continue', 'Content-Length: 3');
    body = 'abc';
  }
  const head = `${method} ${tgt} ${version}\r\n${headers.join('\r\n')}${headers.length ? '\r\n' : ''}\r\n`;
  const raw = Buffer.from(head + body, 'latin1');

  const headerBytes = Buffer.byteLength(headers.join('\r\n'), 'latin1');
  const q = tgt.indexOf('?');
  const pathPart = q < 0 ? tgt : tgt.slice(0, q);
  const ns = q < 0 ? null : new URLSearchParams(tgt.slice(q + 1).replace(/#.*$/, '')).get('ns');
  const upstreamBound =
    (method === 'GET' || method === 'HEAD') &&
    /^[\x21-\x7e]+$/.test(tgt) &&
    !tgt.includes('#') &&
    (version === 'HTTP/1.1' || version === 'HTTP/1.0') &&
    wellFramed &&
    headerBytes < 16 * 1024 &&
    REGISTRY_PATH.test(pathPart) &&
    (ns === null || ns === '' || MIRRORED.has(ns.toLowerCase()));
  return { raw, method, upstreamBound, mayCloseSilently: method === 'CONNECT' || headerBytes > 16 * 1024, reusable: !/[\r\n]/.test(tgt) };
}
