/**
 * Measure 2's hashing relays (bench/relay-server.ts) against a loopback
 * upstream: they must do what the ceiling they measure claims, i.e. pass
 * every byte on, hold the last chunk until the digest matched (a wrong
 * digest gets a short body, never the whole), pass the bench's token on,
 * and (with a write directory) leave nothing behind on disk.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { createRelay } from '../../bench/relay-server.js';
import { waitFor } from '../harness/procs.js';

const CHUNK = 64 * 1024;
const good = Buffer.alloc(40 * CHUNK + 777);
for (let i = 0; i < good.length; i++) good[i] = (i * 31 + (i >> 9)) & 0xff;
const goodHex = createHash('sha256').update(good).digest('hex');
/** A digest the upstream's bytes do not have: the relay must not complete it. */
const badHex = createHash('sha256').update('something else').digest('hex');
const TOKEN = 'Bearer bench-token';

async function listen(server: http.Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/** An upstream that answers both digests with `good`'s bytes, in 64 KiB writes, to a Bearer only. */
async function upstream(t: { teardown(fn: () => void): void }): Promise<string> {
  const server = http.createServer((req, res) => {
    if (req.headers.authorization !== TOKEN) {
      res.writeHead(401, { 'www-authenticate': 'Bearer realm="x"' }).end('{"errors":[{"code":"UNAUTHORIZED"}]}');
      return;
    }
    if (!/\/blobs\/sha256:[0-9a-f]{64}$/.test(req.url ?? '')) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-length': good.length });
    let off = 0;
    const more = (): void => {
      while (off < good.length) {
        const ok = res.write(good.subarray(off, off + CHUNK));
        off += CHUNK;
        if (!ok) {
          res.once('drain', more);
          return;
        }
      }
      res.end();
    };
    more();
  });
  t.teardown(() => {
    server.closeAllConnections();
    server.close();
  });
  return listen(server);
}

/** GETs `url`: status, content-length, the bytes received, and whether the body ended cleanly. */
function get(url: string, headers: http.OutgoingHttpHeaders): Promise<{ status: number; length: number; body: Buffer; complete: boolean }> {
  return new Promise((resolve, reject) => {
    http
      .get(url, { headers, agent: false }, (res) => {
        const parts: Buffer[] = [];
        res.on('data', (c: Buffer) => parts.push(c));
        const done = (complete: boolean) => () =>
          resolve({ status: res.statusCode ?? 0, length: Number(res.headers['content-length'] ?? -1), body: Buffer.concat(parts), complete });
        res.once('end', done(true));
        res.once('aborted', done(false));
        res.once('error', done(false));
      })
      .once('error', reject);
  });
}

async function relay(t: { teardown(fn: () => void): void }, up: string, writeDir: string | null): Promise<string> {
  const server = createRelay({ upstream: up, writeDir });
  t.teardown(() => {
    server.closeAllConnections();
    server.close();
  });
  return listen(server);
}

for (const disk of [false, true]) {
  t.test(`the ${disk ? 'hashing and writing' : 'hashing'} relay`, async (t) => {
    const dir = disk ? mkdtempSync(path.join(os.tmpdir(), 'bench-relay-')) : null;
    if (dir) t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const url = await relay(t, await upstream(t), dir);

    const r = await get(`${url}/v2/library/big/blobs/sha256:${goodHex}`, { authorization: TOKEN });
    t.equal(r.status, 200);
    t.equal(r.length, good.length, 'the upstream\'s length');
    t.ok(r.complete, 'the body ended');
    t.ok(r.body.equals(good), 'every byte, in order');

    const bad = await get(`${url}/v2/library/big/blobs/sha256:${badHex}`, { authorization: TOKEN });
    t.equal(bad.status, 200, 'the headers went out before the digest was known');
    t.notOk(bad.complete, 'a digest mismatch ends the body short');
    t.ok(bad.body.length < good.length, `the last chunk was held back (${bad.body.length} of ${good.length} bytes)`);

    const anon = await get(`${url}/v2/library/big/blobs/sha256:${goodHex}`, {});
    t.equal(anon.status, 401, 'without the client\'s token the upstream\'s 401 comes back: the relay has none of its own');
    t.equal((await get(`${url}/v2/library/big/manifests/v1`, { authorization: TOKEN })).status, 404, 'blobs only');

    if (dir) await waitFor('the temp files are gone', () => readdirSync(dir).length === 0, { timeoutMs: 10_000 });
  });
}
