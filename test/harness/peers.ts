/**
 * Site peers for e2e tests: a site key file, peer addresses on 127.0.0.1, .2, .3 (all loopback
 * on Linux), a site of real berths with `[peers]` static members, and a streaming GET that tells
 * the test when the first bytes reached the client (to act in the middle of a transfer).
 */
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { startBerth, type Berth, type BerthOptions } from './berth.js';
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
