/**
 * Site peers for e2e tests: a site key file, peer addresses on 127.0.0.1, .2, .3 (all loopback
 * on Linux), a site of real berths with `[peers]` static members, a streaming GET that tells
 * the test when the first bytes reached the client (to act in the middle of a transfer), and a
 * berth node in the test process (the real Mirror, SitePeers and content store, with a
 * membership the test hands it) for membership sources a daemon cannot yet be pointed at from
 * a test (a DNS server of the test's own, a Kubernetes API simulator).
 */
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import pino from 'pino';
import { Mirror } from '../../src/cache/mirror.js';
import { Upstreams } from '../../src/cache/upstreams.js';
import { loadSiteKey } from '../../src/peers/auth.js';
import type { Membership } from '../../src/peers/membership.js';
import { SitePeers } from '../../src/peers/site.js';
import { createRegistryClient } from '../../src/upstream/client.js';
import { startBerth, type Berth, type BerthOptions } from './berth.js';
import { readAll, tempStore } from './cache-fakes.js';
import type { Fetched } from './fault-proxy.js';
import { freePort, type Teardown } from './procs.js';

/** Writes a site key (32 random bytes, base64, newline) to `dir/site.key`; returns its path. */
export async function writeSiteKey(dir: string): Promise<string> {
  const file = path.join(dir, 'site.key');
  await writeFile(file, randomBytes(32).toString('base64') + '\n', { mode: 0o600 });
  return file;
}

function portFreeOn(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen(port, host, () => srv.close(() => resolve(true)));
  });
}

/** One TCP port free on every host given (DNS members share one port: A records carry no port). */
export async function portFreeOnAll(hosts: readonly string[]): Promise<number> {
  for (let i = 0; i < 50; i++) {
    const port = await freePort();
    let free = true;
    for (const h of hosts) if (!(await portFreeOn(h, port))) free = false;
    if (free) return port;
  }
  throw new Error(`no port free on all of ${hosts.join(', ')}`);
}

/** `127.0.0.<i+1>:<port>` for i < n, each with a port of its own (or `port` for all). */
export async function peerAddresses(n: number, port?: number): Promise<string[]> {
  const out: string[] = [];
  for (let i = 1; i <= n; i++) out.push(`127.0.0.${i}:${port ?? (await freePort())}`);
  return out;
}

export interface SiteNodeOptions {
  /** This node's `[peers] listen`. */
  listen: string;
  /** Its upstream (docker.io), e.g. a fault proxy of its own. */
  upstreamUrl: string;
  /** Its `[peers] members`; default: every listen address of the site. */
  members?: readonly string[];
}

/**
 * Starts one berth per node, all at once, with `[peers]` static members, short peer connect and
 * header timeouts, and the upstream named docker.io.
 */
export async function startSite(t: Teardown, o: { keyFile: string; nodes: SiteNodeOptions[]; peers?: Record<string, unknown>; berth?: Partial<BerthOptions> }): Promise<Berth[]> {
  const all = o.nodes.map((n) => n.listen);
  return Promise.all(
    o.nodes.map((n) =>
      startBerth(t, {
        upstreams: [{ registry: 'docker.io', url: n.upstreamUrl, connect_timeout: '1s', header_timeout: '10s' }],
        ...o.berth,
        extra: {
          ...o.berth?.extra,
          peers: { listen: n.listen, key_file: o.keyFile, members: n.members ?? all, connect_timeout: '1s', header_timeout: '10s', ...o.peers },
        },
      }),
    ),
  );
}

export interface StreamingGet {
  /** Resolves once at least `bytes` body bytes reached the client (rejects if the answer ends first). */
  received(bytes: number): Promise<void>;
  /** The whole answer, as fetchOnce gives it. */
  done: Promise<Fetched>;
}

/** A GET on a fresh connection whose progress the test can wait on. Never rejects `done`. */
export function streamingGet(url: string, opts: { timeoutMs?: number } = {}): StreamingGet {
  const started = Date.now();
  let got = 0;
  let ended = false;
  const waiters: { bytes: number; resolve: () => void; reject: (e: Error) => void }[] = [];
  const wake = (): void => {
    for (const w of [...waiters]) {
      if (got >= w.bytes) w.resolve();
      else if (ended) w.reject(new Error(`the answer ended after ${got} bytes, before ${w.bytes}`));
      else continue;
      waiters.splice(waiters.indexOf(w), 1);
    }
  };
  const done = new Promise<Fetched>((resolve) => {
    let settled = false;
    const finish = (f: Omit<Fetched, 'ms'>): void => {
      if (settled) return;
      settled = true;
      ended = true;
      wake();
      resolve({ ...f, ms: Date.now() - started });
    };
    const req = http.request(url, { agent: false }, (res) => {
      const chunks: Buffer[] = [];
      let error: string | undefined;
      res.on('data', (c: Buffer) => {
        chunks.push(c);
        got += c.length;
        wake();
      });
      res.on('error', (e) => (error = e.message));
      res.once('close', () => finish({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), complete: res.complete && error === undefined, error }));
    });
    const timeoutMs = opts.timeoutMs ?? 120_000;
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.once('error', (e) => finish({ status: 0, headers: {}, body: Buffer.alloc(0), complete: false, error: e.message }));
    req.end();
  });
  return {
    received: (bytes) =>
      new Promise<void>((resolve, reject) => {
        waiters.push({ bytes, resolve, reject });
        wake();
      }),
    done,
  };
}

/** Resolves once `node` logged that it committed `digest` to its cache ("blob cached"). */
export function waitForCached(node: Berth, digest: string, timeoutMs = 60_000): Promise<void> {
  return node.service.waitForOutput(new RegExp(`"digest":"${digest}"[^\\n]*"msg":"blob cached"`), timeoutMs);
}

export interface InProcessNode {
  site: SitePeers;
  mirror: Mirror;
  /** A blob GET as containerd would make it (`?ns=docker.io`): the bytes the client gets. */
  getBlob(repository: string, digest: string): Promise<Buffer>;
}

/**
 * One berth node in the test process: the real Mirror over a real content store on a temp dir,
 * its upstream docker.io at `upstreamUrl`, and SitePeers over `membership` (started here) that
 * signs its requests with the site key, as a daemon's would. It has no peer listener: it asks,
 * it is never asked.
 */
export async function startInProcessNode(t: Teardown, o: { membership: Membership; upstreamUrl: string; keyFile: string }): Promise<InProcessNode> {
  const fx = await tempStore(t);
  const logger = pino({ level: process.env.BERTH_TEST_LOG ?? 'silent' });
  const timeouts = { connectMs: 1_000, headersMs: 10_000, bodyIdleMs: 10_000 };
  const upstream = createRegistryClient({ registry: 'docker.io', url: o.upstreamUrl, timeouts, logger, pool: { keepAliveTimeoutMs: 1_000 } });
  const key = loadSiteKey(o.keyFile);
  await o.membership.start();
  const site = new SitePeers({ membership: o.membership, key: () => key, scheme: 'http', timeouts, logger, metrics: fx.metrics });
  const mirror = new Mirror({
    store: fx.store,
    refusals: fx.index.refusals,
    upstreams: new Upstreams([upstream]),
    metrics: fx.metrics,
    logger,
    tagTtlMs: 60_000,
    serveStale: true,
    revalidateTimeoutMs: 3_000,
    site,
  });
  t.teardown(async () => {
    await mirror.drain(10_000);
    await site.close();
    await upstream.close();
  });
  return {
    site,
    mirror,
    async getBlob(repository, digest) {
      const h = await mirror.blob({ ns: 'docker.io', name: repository }, digest, { head: false });
      return readAll(h.open!(0, h.size - 1));
    },
  };
}

/** Resolves once `m.members()` is exactly `expected` (in any order): at once, or on a change. */
export function membersBecome(m: Membership, expected: readonly string[], timeoutMs = 30_000): Promise<void> {
  const want = [...expected].sort().join(',');
  const same = (list: readonly string[]): boolean => [...list].sort().join(',') === want;
  if (same(m.members())) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`members are ${m.members().join(',') || 'none'}, not ${want}, after ${timeoutMs} ms`));
    }, timeoutMs);
    const off = m.onChange((list) => {
      if (!same(list)) return;
      clearTimeout(timer);
      off();
      resolve();
    });
  });
}
