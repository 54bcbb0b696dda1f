/**
 * Cached blob bodies on both paths: sendfile(2) through the berth-sendfile
 * addon, and the copying path (`[server] sendfile = false`, TLS listeners).
 * A real content store, a real Node HTTP(S) server with the daemon's adapter,
 * real sockets; every body compared by SHA-256. The fd count of this process
 * shows nothing leaks when clients leave mid-body.
 */
import t, { type Test } from 'tap';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { once } from 'node:events';
import { createHash, randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { Hono } from 'hono';
import { serve } from '@hono/node-server';
import pino from 'pino';
import { BlobCache } from '../../src/cache/blobs.js';
import type { AppEnv } from '../../src/http/app.js';
import { sendBlob } from '../../src/http/registry-routes.js';
import { errorResponse } from '../../src/http/respond.js';
import { zeroCopy, type ZeroCopy } from '../../src/http/sendfile.js';
import { FakeUpstream, commitBlob, logger, tempStore } from '../harness/cache-fakes.js';
import { makeServerCert, type TlsFiles } from '../harness/tls.js';

const MiB = 1024 * 1024;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
/**
 * More than loopback's socket buffers can hold (tcp_rmem's max is 32 MiB here), so a
 * client that stops reading stalls the send; one random MiB repeated, to stay cheap.
 */
const big = (size: number) => {
  const block = randomBytes(MiB);
  const b = Buffer.allocUnsafe(size);
  for (let o = 0; o < size; o += MiB) block.copy(b, o, 0, Math.min(MiB, size - o));
  return b;
};
const fdCount = () => fs.readdirSync('/proc/self/fd').length;

/** Waits (on timers, bounded) until `ok()` holds: fds are closed by the thread pool, not by an event we can await. */
async function until(ok: () => boolean, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

interface Got {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

async function setup(t: Test, o: { sendfile: boolean; tls?: TlsFiles; size?: number; idleTimeoutMs?: number }) {
  const fx = await tempStore(t);
  const up = new FakeUpstream();
  const cache = new BlobCache(fx.store, fx.metrics, logger, { maxResumes: 0 });
  const data = o.size ? big(o.size) : randomBytes(8 * MiB + 13);
  const digest = await commitBlob(fx.store, data);
  const lines: { blobPath?: string }[] = [];
  const log = pino({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l)) });
  const real = zeroCopy(o.sendfile, log, o.idleTimeoutMs ? { idleTimeoutMs: o.idleTimeoutMs } : {});
  // Counts what went through sendfile, and how each send ended (errno, 0 for all sent).
  const sends: number[] = [];
  let sent = 0;
  let settle: (() => void)[] = [];
  const zc: ZeroCopy | null = real && {
    usable: (res) => real.usable(res),
    send: async (res, fd, offset, length) => {
      const errno = await real.send(res, fd, offset, length);
      sends.push(errno);
      for (const s of settle) s();
      settle = [];
      return errno;
    },
    follow: (res, next) => real.follow(res, next),
  };
  const app = new Hono<AppEnv>();
  app.on(['GET', 'HEAD'], '/blob', async (c) => {
    c.set('reqId', 'test');
    const head = c.req.method === 'HEAD';
    const handle = await cache.get({ client: up, repository: 'library/a', digest, head });
    return sendBlob(c, handle, head, (_s, n) => (sent += n), zc);
  });
  app.onError((err, c) => errorResponse(c, err));
  const server = o.tls
    ? serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1', createServer: https.createServer, serverOptions: { cert: fs.readFileSync(o.tls.certFile), key: fs.readFileSync(o.tls.keyFile) } })
    : serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' });
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  const agent = o.tls ? new https.Agent({ keepAlive: true, ca: fs.readFileSync(o.tls.caFile), maxSockets: 64 }) : new http.Agent({ keepAlive: true, maxSockets: 64 });
  t.teardown(async () => {
    agent.destroy();
    (server as http.Server).closeAllConnections();
    await new Promise((r) => server.close(r));
    await cache.drain(0);
  });
  const request = (method: string, headers: Record<string, string> = {}) =>
    (o.tls ? https : http).request({ host: '127.0.0.1', port, path: '/blob', method, headers, agent });
  const get = (headers: Record<string, string> = {}, method = 'GET'): Promise<Got> =>
    new Promise((resolve, reject) => {
      const req = request(method, headers);
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end();
    });
  /** The next send's end (sendfile path only). */
  const nextSend = () => new Promise<void>((r) => settle.push(r));
  return { ...fx, data, digest, get, request, sends, nextSend, lines, served: () => sent, real };
}

/** Every kind of answer; returns the body bytes the clients received. */
async function bodies(t: Test, s: Awaited<ReturnType<typeof setup>>): Promise<number> {
  const { data, get } = s;
  let bytes = 0;
  const full = await get();
  t.equal(full.status, 200);
  t.equal(full.headers['content-length'], String(data.length));
  t.equal(sha(full.body), sha(data), 'the whole body, byte for byte');
  bytes += full.body.length;
  const size = data.length;
  const ranges: [string, number, number][] = [
    ['bytes=0-0', 0, 0],
    ['bytes=1000-2000000', 1000, 2_000_000],
    [`bytes=${size - 1}-${size - 1}`, size - 1, size - 1],
    ['bytes=-100', size - 100, size - 1],
    [`bytes=${5 * MiB}-`, 5 * MiB, size - 1],
  ];
  for (const [range, start, end] of ranges) {
    const r = await get({ range });
    t.equal(r.status, 206, range);
    t.equal(r.headers['content-range'], `bytes ${start}-${end}/${size}`, `${range}: Content-Range`);
    t.equal(r.body.length, end - start + 1, `${range}: length`);
    t.equal(sha(r.body), sha(data.subarray(start, end + 1)), `${range}: the exact bytes`);
    bytes += r.body.length;
  }
  const bad = await get({ range: `bytes=${size}-` });
  t.equal(bad.status, 416, 'a range past the end is 416');
  const head = await get({}, 'HEAD');
  t.equal(head.status, 200);
  t.equal(head.headers['content-length'], String(size), 'HEAD: the length, no body');
  t.equal(head.body.length, 0);
  // 16 clients at once, each on its own connection.
  const many = await Promise.all(Array.from({ length: 16 }, (_, i) => (i % 2 ? get() : get({ range: `bytes=${i * 1000}-` }))));
  t.ok(
    many.every((r, i) => sha(r.body) === sha(i % 2 ? data : data.subarray(i * 1000))),
    '16 concurrent clients all got exact bytes',
  );
  // Keep-alive: a second answer after a sendfile body on the same connection is well framed.
  const again = await get();
  t.equal(sha(again.body), sha(data), 'the connection is reused cleanly after a body');
  return bytes + many.reduce((n, r) => n + r.body.length, 0) + again.body.length;
}

/** A client that reads the first chunk and disconnects. */
async function leave(s: Awaited<ReturnType<typeof setup>>): Promise<void> {
  await new Promise<void>((resolve) => {
    const req = s.request('GET', { connection: 'close' });
    req.on('response', (res: http.IncomingMessage) => {
      res.once('data', () => {
        req.destroy();
        resolve();
      });
    });
    req.on('error', () => undefined);
    req.end();
  });
}

t.test('sendfile: full body, ranges, HEAD, concurrent clients', { skip: zeroCopy(true, logger) ? false : 'the berth-sendfile addon is not built' }, async (t) => {
  const s = await setup(t, { sendfile: true });
  t.equal(s.lines.at(-1)?.blobPath, 'sendfile', 'the daemon logs the sendfile path');
  const bytes = await bodies(t, s);
  // A send ends (and counts) when the kernel took its last byte: maybe after the client read it.
  await until(() => s.sends.length === 23, '23 sends to end');
  t.equal(s.served(), bytes, 'every byte sent is counted as served');
  t.ok(s.sends.length >= 23, `the bodies went through sendfile (${s.sends.length} sends)`);
  t.ok(
    s.sends.every((e) => e === 0),
    'every send completed',
  );
  t.notOk(s.store.isBusy(s.digest), 'no reader left counted');
});

t.test('sendfile: a client that leaves mid-body ends the send and leaks no fd', { skip: zeroCopy(true, logger) ? false : 'the berth-sendfile addon is not built' }, async (t) => {
  const s = await setup(t, { sendfile: true, size: 128 * MiB });
  await s.get({ range: 'bytes=0-0' }); // warm the connection pool and the lazy parts of the server
  await until(() => s.sends.length === 1, 'the first send to end');
  const before = fdCount();
  for (let i = 0; i < 3; i++) {
    const ended = s.nextSend();
    await leave(s);
    await ended;
    t.not(s.sends.at(-1), 0, `send ${i + 1} stopped with an error (errno ${s.sends.at(-1)})`);
  }
  await until(() => !s.store.isBusy(s.digest), 'the reader count to drop');
  await until(() => fdCount() <= before, `fds back to ${before}`);
  t.ok(fdCount() <= before, 'every blob fd and socket dup is closed');
  const r = await s.get();
  t.equal(sha(r.body), sha(s.data), 'the next client still gets the exact bytes');
});

t.test('sendfile: a client that stops reading is dropped after the idle timeout', { skip: zeroCopy(true, logger) ? false : 'the berth-sendfile addon is not built' }, async (t) => {
  const s = await setup(t, { sendfile: true, size: 128 * MiB, idleTimeoutMs: 500 });
  const ended = s.nextSend();
  const req = s.request('GET');
  const response = new Promise<http.IncomingMessage>((resolve) => {
    req.on('response', (res: http.IncomingMessage) => {
      res.pause(); // reads nothing: the server's socket buffer fills
      resolve(res);
    });
  });
  req.on('error', () => undefined);
  req.end();
  const res = await response;
  await ended;
  t.equal(s.sends.at(-1), os.constants.errno.ETIMEDOUT, 'the send gave up with ETIMEDOUT');
  // Reading again, the client finds the body cut short and the connection closed.
  let got = 0;
  res.on('data', (c: Buffer) => (got += c.length));
  res.on('error', () => undefined);
  const closed = new Promise((r) => res.once('close', r)); // events.once would reject on the 'aborted' error
  res.resume();
  await closed;
  t.notOk(res.complete, 'the client saw the body cut short');
  t.ok(got < s.data.length, `a truncated body (${got} bytes)`);
  await until(() => !s.store.isBusy(s.digest), 'the reader count to drop');
});

t.test('copying path ([server] sendfile = false): the same answers', async (t) => {
  const s = await setup(t, { sendfile: false });
  t.equal(s.real, null, 'no zero-copy sender');
  t.equal(s.lines.at(-1)?.blobPath, 'copy', 'the daemon logs the copying path');
  const bytes = await bodies(t, s);
  await until(() => s.served() === bytes, 'every body to end');
  t.equal(s.served(), bytes, 'every byte sent is counted as served');
  t.equal(s.sends.length, 0);
  const before = fdCount();
  await leave(s);
  await until(() => !s.store.isBusy(s.digest), 'the reader count to drop');
  await until(() => fdCount() <= before, `fds back to ${before}`);
  t.ok(fdCount() <= before, 'no fd left after a client left mid-body');
});

t.test('a TLS listener copies even with sendfile on', { skip: zeroCopy(true, logger) ? false : 'the berth-sendfile addon is not built' }, async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'berth-send-tls-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const tls = await makeServerCert(dir);
  const s = await setup(t, { sendfile: true, tls });
  t.equal(s.lines.at(-1)?.blobPath, 'sendfile');
  await bodies(t, s);
  t.equal(s.sends.length, 0, 'nothing went through sendfile on TLS');
});
