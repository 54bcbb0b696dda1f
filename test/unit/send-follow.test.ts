/**
 * Blobs still being filled, sent to their clients (the one that started the
 * fill and every one that joined it) on a real Node HTTP server with the
 * daemon's adapter: with sendfile(2) from the fill's file as it grows, or
 * copied from the fill (`[server] sendfile = false`). The test feeds the
 * upstream body by hand, so the clients really follow a transfer in
 * progress. Every body is compared by SHA-256; the fd count of this process
 * shows nothing leaks when a client leaves mid-fill.
 */
import t, { type Test } from 'tap';
import fs from 'node:fs';
import http from 'node:http';
import { once } from 'node:events';
import { PassThrough } from 'node:stream';
import { createHash, randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { Hono } from 'hono';
import { serve } from '@hono/node-server';
import { BlobCache } from '../../src/cache/blobs.js';
import { FOLLOW_BATCH } from '../../src/cache/fill-reader.js';
import type { AppEnv } from '../../src/http/app.js';
import { sendBlob } from '../../src/http/registry-routes.js';
import { errorResponse } from '../../src/http/respond.js';
import { zeroCopy, type ZeroCopy } from '../../src/http/sendfile.js';
import { sha256 } from '../../src/oci/digest.js';
import type { BlobAnswer, RequestOptions } from '../../src/upstream/types.js';
import { FakeUpstream, logger, tempStore } from '../harness/cache-fakes.js';

const MiB = 1024 * 1024;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const fdCount = () => fs.readdirSync('/proc/self/fd').length;
const noAddon = zeroCopy(true, logger) ? false : 'the berth-sendfile addon is not built';

/** Waits (on timers, bounded) until `ok()` holds: for counts kept by other parts, with no event to await. */
async function until(ok: () => boolean, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** An upstream whose blob bodies the test writes by hand (`body`), announcing the true size. */
class ManualUpstream extends FakeUpstream {
  readonly bodies: PassThrough[] = [];
  private readonly waiting: ((b: PassThrough) => void)[] = [];
  constructor(private readonly size: number) {
    super();
  }
  override async getBlob(repository: string, digest: string, _opts: RequestOptions & { offset?: number } = {}): Promise<BlobAnswer | null> {
    this.log.push(`getBlob ${repository} ${digest}`);
    const body = new PassThrough();
    this.bodies.push(body);
    for (const w of this.waiting.splice(0)) w(body);
    return { status: 200, offset: 0, size: this.size, body };
  }
  /** The body of the next (or the current) upstream GET. */
  body(): Promise<PassThrough> {
    const b = this.bodies.at(-1);
    return b ? Promise.resolve(b) : new Promise((r) => this.waiting.push(r));
  }
}

/** A client's answer as it arrives: `got` grows with each chunk; `done` settles at the end or a cut. */
interface Follower {
  got: () => number;
  done: Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer; complete: boolean }>;
  leave: () => void;
}

async function setup(t: Test, o: { sendfile: boolean; size: number }) {
  const fx = await tempStore(t);
  const data = randomBytes(o.size);
  const digest = sha256(data);
  const up = new ManualUpstream(data.length);
  const cache = new BlobCache(fx.store, fx.metrics, logger, { maxResumes: 0 });
  const real = zeroCopy(o.sendfile, logger);
  // How each zero-copy body ended (errno, 0 for all sent), and the ranges it sent.
  const follows: number[] = [];
  const ranges: number[] = [];
  let sent = 0;
  const zc: ZeroCopy | null = real && {
    usable: (res) => real.usable(res),
    send: (res, fd, offset, length) => real.send(res, fd, offset, length),
    follow: async (res, next) => {
      const errno = await real.follow(res, async (signal) => {
        const r = await next(signal);
        if (r) ranges.push(r.length);
        return r;
      });
      follows.push(errno);
      return errno;
    },
  };
  const app = new Hono<AppEnv>();
  app.get('/blob', async (c) => {
    c.set('reqId', 'test');
    const handle = await cache.get({ client: up, repository: 'library/a', digest, head: false });
    return sendBlob(c, handle, false, (_s, n) => (sent += n), zc);
  });
  app.onError((err, c) => errorResponse(c, err));
  const server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' });
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  t.teardown(async () => {
    agent.destroy();
    (server as http.Server).closeAllConnections();
    await new Promise((r) => server.close(r));
    await cache.drain(0);
  });
  /** A GET that starts now; its bytes are counted as they arrive. */
  const follow = (headers: Record<string, string> = {}): Follower => {
    let got = 0;
    const req = http.request({ host: '127.0.0.1', port, path: '/blob', method: 'GET', headers, agent });
    const done = new Promise<Awaited<Follower['done']>>((resolve, reject) => {
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => {
          got += c.length;
          chunks.push(c);
        });
        const end = () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks), complete: res.complete });
        res.on('end', end);
        res.on('error', () => undefined);
        res.on('close', end);
      });
      req.on('error', reject);
    });
    req.end();
    return { got: () => got, done, leave: () => req.destroy() };
  };
  return { ...fx, data, digest, up, cache, follow, follows, ranges, served: () => sent };
}

/** Eight clients join one fill (whole bodies and ranges) and follow it as the test feeds the upstream. */
async function eightFollowers(t: Test, s: Awaited<ReturnType<typeof setup>>): Promise<void> {
  const { data, follow, up } = s;
  const size = data.length;
  const wanted: [number, number][] = [
    [0, size - 1],
    [0, size - 1],
    [0, size - 1],
    [0, 0],
    [1000, 2 * MiB],
    [size - 1, size - 1],
    [3 * MiB + 7, size - 1],
    [size - 100, size - 1],
  ];
  const clients = wanted.map(([a, b]) => (a === 0 && b === size - 1 ? follow() : follow({ range: `bytes=${a}-${b}` })));
  const body = await up.body();
  // Everyone has joined the one fill before a byte arrives.
  await until(() => s.cache.inFlight === 1 && s.store.isBusy(s.digest), 'the fill to start');
  const half = Math.floor(size / 2);
  body.write(data.subarray(0, half));
  await until(() => clients[0]!.got() >= FOLLOW_BATCH && clients[1]!.got() >= FOLLOW_BATCH, 'the followers to get the first bytes');
  t.ok(clients[0]!.got() < size, `a follower got ${clients[0]!.got()} bytes before the upstream sent the rest`);
  t.equal(s.cache.inFlight, 1, 'the fill is still under way');
  body.end(data.subarray(half));
  const answers = await Promise.all(clients.map((c) => c.done));
  answers.forEach((a, i) => {
    const [start, end] = wanted[i]!;
    const whole = start === 0 && end === size - 1;
    t.equal(a.status, whole ? 200 : 206, `client ${i}: status`);
    t.ok(a.complete, `client ${i}: a complete body`);
    t.equal(a.body.length, end - start + 1, `client ${i}: length`);
    t.equal(sha(a.body), sha(data.subarray(start, end + 1)), `client ${i}: the exact bytes ${start}-${end}`);
  });
  t.equal(up.count('getBlob'), 1, 'one upstream GET for all eight');
  await until(() => !s.store.isBusy(s.digest) && s.cache.inFlight === 0, 'the reader count to drop and the fill to commit');
  t.equal(s.store.present(s.digest), size, 'the blob is cached');
}

t.test('a blob being filled goes to every client with sendfile, byte for byte, as it arrives', { skip: noAddon }, async (t) => {
  const s = await setup(t, { sendfile: true, size: 12 * MiB + 5 });
  await eightFollowers(t, s);
  await until(() => s.follows.length === 8, 'eight follows to end');
  t.same(s.follows, [0, 0, 0, 0, 0, 0, 0, 0], 'every client was followed with sendfile, to the end');
  t.ok(s.ranges.length > 8, `some bodies went out in several runs as the file grew (${s.ranges.length} sends for 8 clients)`);
  t.ok(
    s.ranges.every((n) => n >= 1),
    'no empty send',
  );
  const total = 3 * s.data.length + 1 + (2 * MiB - 1000 + 1) + 1 + (s.data.length - 3 * MiB - 7) + 100;
  t.equal(s.served(), total, 'every byte sent is counted as served');
});

t.test('copying path ([server] sendfile = false): the same bodies from a fill', async (t) => {
  const s = await setup(t, { sendfile: false, size: 12 * MiB + 5 });
  await eightFollowers(t, s);
  t.equal(s.follows.length, 0, 'nothing went through sendfile');
});

for (const sendfile of [true, false]) {
  const how = sendfile ? 'sendfile' : 'copying';
  t.test(`${how}: a fill whose bytes do not match the digest reaches its clients cut short, never complete`, { skip: sendfile && noAddon }, async (t) => {
    const s = await setup(t, { sendfile, size: 4 * MiB });
    const clients = [s.follow(), s.follow(), s.follow({ range: `bytes=${2 * MiB}-` })];
    const body = await s.up.body();
    await until(() => s.store.isBusy(s.digest), 'the clients to join');
    const wrong = Buffer.from(s.data);
    wrong.writeUInt8(wrong.readUInt8(wrong.length - 1) ^ 0xff, wrong.length - 1);
    body.write(wrong.subarray(0, 2 * MiB));
    await until(() => clients[0]!.got() > 0, 'the first bytes to reach a client');
    body.end(wrong.subarray(2 * MiB));
    const answers = await Promise.all(clients.map((c) => c.done));
    for (const [i, a] of answers.entries()) {
      t.notOk(a.complete, `client ${i}: the body was cut short`);
      t.ok(a.body.length < Number(a.headers['content-length']), `client ${i}: ${a.body.length} of ${a.headers['content-length']} bytes`);
    }
    if (sendfile) {
      await until(() => s.follows.length === 3, 'three follows to end');
      t.ok(
        s.follows.every((e) => e !== 0),
        'every follow ended in an error',
      );
    }
    await until(() => s.cache.inFlight === 0, 'the fill to end');
    t.equal(s.store.present(s.digest), undefined, 'nothing cached');
    t.equal(s.served(), 0, 'nothing counted as served');
  });

  t.test(`${how}: a client that leaves mid-fill frees what it held; the fill and the others go on`, { skip: sendfile && noAddon }, async (t) => {
    const s = await setup(t, { sendfile, size: 8 * MiB });
    const before = fdCount();
    // Not kept alive: once both are done, every socket of theirs is closed too.
    const leaver = s.follow({ connection: 'close' });
    const stayer = s.follow({ connection: 'close' });
    const body = await s.up.body();
    await until(() => s.store.isBusy(s.digest), 'the clients to join');
    body.write(s.data.subarray(0, 3 * MiB));
    await until(() => leaver.got() > 0, 'the first bytes to reach the client that leaves');
    leaver.leave();
    const left = await leaver.done;
    t.notOk(left.complete, 'the client that left has a cut body');
    if (sendfile) await until(() => s.follows.length === 1, 'its follow to end');
    body.end(s.data.subarray(3 * MiB));
    const stayed = await stayer.done;
    t.equal(sha(stayed.body), sha(s.data), 'the client that stayed got the exact bytes');
    await until(() => s.cache.inFlight === 0, 'the fill to commit');
    t.equal(s.store.present(s.digest), s.data.length, 'the blob is cached');
    await until(() => !s.store.isBusy(s.digest), 'the reader count to drop');
    await until(() => fdCount() <= before, `fds back to ${before}`);
    t.ok(fdCount() <= before, 'every fill file fd, socket and socket dup is closed');
    if (sendfile) t.same(s.follows.slice(1), [0], 'the client that stayed was followed to the end');
  });
}
