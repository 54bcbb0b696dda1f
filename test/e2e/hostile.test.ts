/**
 * Hostile input the fuzz run (fuzz.test.ts) only samples, each case asserted
 * on its own against a real berth with a real Distribution behind it: the
 * exact status, the OCI error code, no stack trace, the daemon alive, the
 * cache and a sentinel beside it unchanged. HTTP requests are written byte
 * for byte on raw sockets; hostile tars go through `berth import` while the
 * daemon runs on the same cache.
 */
import t from 'tap';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { startTokenServer } from '../harness/token-server.js';
import { startRegistry } from '../harness/registry.js';
import { makeImage, pushImage, readBlob, sha256Digest } from '../harness/images.js';
import { startBerth } from '../harness/berth.js';
import { tempDirFor, waitFor } from '../harness/procs.js';
import { fetchOnce } from '../harness/fault-proxy.js';
import { writeTar, type WriteEntry } from '../harness/tar.js';
import { cacheState, treeSnapshot } from '../harness/cache-state.js';

const STACK_RE = /\n\s+at [^\n]+:\d+:\d+/;

interface Raw {
  status: number;
  head: string;
  headers: Map<string, string>;
  body: Buffer;
}

/** Writes `bytes` on a fresh connection and reads until the server closes it; splits the answers (HEAD answers have no body). */
function exchange(port: number, bytes: string, heads: boolean[] = []): Promise<Raw[]> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('error', reject);
    s.on('close', () => {
      let rest = Buffer.concat(chunks);
      const out: Raw[] = [];
      while (rest.length > 0) {
        const h = rest.indexOf('\r\n\r\n');
        if (h < 0) return reject(new Error(`a partial answer: ${JSON.stringify(rest.subarray(0, 200).toString('latin1'))}`));
        const head = rest.subarray(0, h).toString('latin1');
        const lines = head.split('\r\n');
        const headers = new Map<string, string>();
        for (const l of lines.slice(1)) headers.set(l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim());
        const n = heads[out.length] ? 0 : Number(headers.get('content-length') ?? 0);
        out.push({ status: Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0]!)?.[1] ?? 0), head, headers, body: rest.subarray(h + 4, h + 4 + n) });
        rest = rest.subarray(h + 4 + n);
      }
      resolve(out);
    });
    s.write(bytes);
  });
}

const get = async (port: number, target: string, headers: string[] = [], method = 'GET'): Promise<Raw> => {
  const [a] = await exchange(port, `${method} ${target} HTTP/1.1\r\nHost: berth\r\n${headers.map((h) => `${h}\r\n`).join('')}Connection: close\r\n\r\n`, [method === 'HEAD']);
  if (!a) throw new Error(`no answer to ${method} ${target}`);
  return a;
};

const errorCode = (r: Raw): string | undefined => {
  try {
    return (JSON.parse(r.body.toString('utf8')) as { errors?: Array<{ code?: string }> }).errors?.[0]?.code;
  } catch {
    return undefined;
  }
};


t.test('hostile requests and archives against a live berth', async (t) => {
  const token = await startTokenServer(t, { users: { pusher: 'push-secret' } });
  const registry = await startRegistry(t, { token });
  const work = await tempDirFor(t, 'berth-hostile');
  const img = await makeImage(path.join(work, 'img'), { layers: 1, layerSize: 4_000_000, seed: 'hostile', tag: 'v1' });
  await pushImage(img.layoutDir, 'v1', registry, 'library/hostile:v1', { creds: 'pusher:push-secret' });
  const layer = img.manifests[0]!.layers[0]!;
  const layerBytes = await readBlob(img.layoutDir, layer);
  const berth = await startBerth(t, { upstreams: [{ registry: 'docker.io', url: registry.url }] });
  const B = `/v2/library/hostile/blobs/${layer}`;
  t.equal((await fetchOnce(`${berth.url}/v2/library/hostile/manifests/v1`)).status, 200, 'manifest cached');
  t.equal((await fetchOnce(`${berth.url}${B}`)).status, 200, 'layer cached');

  const parent = path.dirname(berth.cacheDir);
  const sentinel = path.join(parent, 'sentinel');
  fs.mkdirSync(sentinel);
  fs.writeFileSync(path.join(sentinel, 'keep.txt'), 'keep\n');
  const besideBefore = treeSnapshot(parent, berth.cacheDir);
  const alive = async (t: { notOk(v: unknown, m: string): void; equal(a: unknown, b: unknown, m: string): void }, what: string) => {
    t.notOk(berth.service.hasExited(), `${what}: berth is alive`);
    t.equal((await fetchOnce(`${berth.url}/healthz`)).status, 200, `${what}: /healthz 200`);
  };

  await t.test('every method but GET and HEAD under /v2 is 405 UNSUPPORTED with Allow: GET, HEAD (RFC 9110 §15.5.6)', async (t) => {
    for (const method of ['PUT', 'POST', 'DELETE', 'PATCH', 'OPTIONS']) {
      for (const target of ['/v2/', '/v2/library/hostile/manifests/v1', B, '/v2/library/hostile/blobs/uploads/']) {
        const r = await get(berth.port, target, ['Content-Length: 0'], method);
        t.equal(r.status, 405, `${method} ${target.slice(0, 40)}: 405`);
        t.equal(r.headers.get('allow'), 'GET, HEAD', `${method} ${target.slice(0, 40)}: Allow`);
        t.equal(errorCode(r), 'UNSUPPORTED', `${method}: UNSUPPORTED`);
        t.notMatch(r.body.toString(), STACK_RE);
      }
    }
    await alive(t, '405s');
  });

  await t.test('Range: huge numbers and leading zeros are numbers, not errors', async (t) => {
    const size = layerBytes.length;
    const cases: [string, number, number, number][] = [
      ['bytes=0-99999999999999999999', 206, 0, size - 1],
      ['bytes=100-99999999999999999999', 206, 100, size - 1],
      ['bytes=00000000000000000001-2', 206, 1, 2],
      ['bytes=-99999999999999999999', 206, 0, size - 1],
      ['bytes=99999999999999999999-', 416, 0, 0],
      ['bytes=-0', 416, 0, 0],
      ['bytes=0-0,5-6', 200, 0, size - 1],
      ['bytes=5-1', 200, 0, size - 1],
      ['bytes=1e3-', 200, 0, size - 1],
    ];
    for (const [range, status, start, end] of cases) {
      const r = await get(berth.port, B, [`Range: ${range}`]);
      t.equal(r.status, status, `${range}: ${status}`);
      if (status === 206) {
        t.equal(r.headers.get('content-range'), `bytes ${start}-${end}/${size}`, `${range}: Content-Range`);
        t.ok(r.body.equals(layerBytes.subarray(start, end + 1)), `${range}: the bytes asked for`);
      } else if (status === 200) t.ok(r.body.equals(layerBytes), `${range}: the whole blob`);
      else {
        t.equal(errorCode(r), 'RANGE_INVALID');
        t.equal(r.headers.get('content-range'), `bytes */${size}`);
      }
    }
  });

  await t.test('names at and past 255 characters: 400 NAME_INVALID, never a 502 for the upstream refusing them', async (t) => {
    const cases: [string, number, string][] = [
      [`${'a'.repeat(256)}`, 400, 'NAME_INVALID'],
      [`${'a'.repeat(255)}`, 400, 'NAME_INVALID'], // library/ + 255 for Docker Hub
      [`${'a'.repeat(247)}`, 404, 'MANIFEST_UNKNOWN'], // library/ + 247 = 255: asked upstream, unknown there
      [`a/${'a'.repeat(253)}`, 404, 'MANIFEST_UNKNOWN'],
    ];
    for (const [name, status, code] of cases) {
      for (const kind of ['manifests/v1', `blobs/${layer}`]) {
        const r = await get(berth.port, `/v2/${name}/${kind}`);
        const want = kind.startsWith('blobs') && code === 'MANIFEST_UNKNOWN' ? 'BLOB_UNKNOWN' : code;
        t.equal(r.status, status, `${name.length} chars, ${kind.slice(0, 9)}: ${status}`);
        t.equal(errorCode(r), want, `${name.length} chars, ${kind.slice(0, 9)}: ${want}`);
      }
    }
    await alive(t, 'long names');
  });

  await t.test('ns given twice is refused, whichever comes first (no parameter pollution)', async (t) => {
    for (const q of ['ns=docker.io&ns=evil.example.com', 'ns=evil.example.com&ns=docker.io', 'ns=docker.io&ns=docker.io', 'ns=&ns=docker.io']) {
      const r = await get(berth.port, `/v2/library/hostile/manifests/v1?${q}`);
      t.equal(r.status, 400, `${q}: 400`);
      t.equal(errorCode(r), 'NAME_INVALID', `${q}: NAME_INVALID`);
    }
    t.equal((await get(berth.port, '/v2/library/hostile/manifests/v1?ns=docker.io')).status, 200, 'ns once: served');
    t.equal((await get(berth.port, '/v2/library/hostile/manifests/v1?ns=')).status, 200, 'ns empty: the first upstream, as documented');
  });

  await t.test('pipelined requests are answered in order, byte-exact; HTTP/1.0 gets the whole body and a close', async (t) => {
    const rs = await exchange(
      berth.port,
      `GET ${B} HTTP/1.1\r\nHost: b\r\n\r\nGET /v2/ HTTP/1.1\r\nHost: b\r\n\r\nHEAD ${B} HTTP/1.1\r\nHost: b\r\n\r\nPUT /v2/ HTTP/1.1\r\nHost: b\r\nContent-Length: 0\r\n\r\nGET ${B} HTTP/1.1\r\nHost: b\r\nRange: bytes=0-9\r\nConnection: close\r\n\r\n`,
      [false, false, true, false, false],
    );
    t.same(rs.map((r) => r.status), [200, 200, 200, 405, 206]);
    t.ok(rs[0]!.body.equals(layerBytes), 'first: the blob');
    t.equal(rs[1]!.body.toString(), '{}', 'second: the base');
    t.equal(rs[2]!.headers.get('content-length'), String(layerBytes.length), 'third: HEAD headers');
    t.ok(rs[4]!.body.equals(layerBytes.subarray(0, 10)), 'last: the range');
    const [old] = await exchange(berth.port, `GET ${B} HTTP/1.0\r\n\r\n`);
    t.equal(old!.status, 200);
    t.ok(old!.body.equals(layerBytes), 'HTTP/1.0: the whole blob');
  });

  await t.test('clients that leave mid-body leave no descriptor behind', async (t) => {
    const fds = () => fs.readdirSync(`/proc/${berth.service.pid}/fd`).length;
    const before = fds();
    const cut = (req: string) =>
      new Promise<number>((resolve) => {
        const s = net.connect(berth.port, '127.0.0.1');
        let n = 0;
        s.on('data', (d: Buffer) => {
          n += d.length;
          if (n > 64 * 1024) s.destroy();
        });
        s.on('close', () => resolve(n));
        s.on('error', () => undefined);
        s.write(req);
      });
    const got = await Promise.all(Array.from({ length: 40 }, (_, i) => cut(`GET ${B} HTTP/1.1\r\nHost: b\r\n${i % 2 ? 'Range: bytes=10-\r\n' : ''}\r\n`)));
    t.ok(got.every((n) => n < layerBytes.length), 'every client left before the end');
    await waitFor('descriptors back to where they were', () => fds() <= before + 2, { timeoutMs: 30_000 });
    t.pass(`descriptors: ${before} before, ${fds()} after`);
    await alive(t, 'mid-body closes');
  });

  await t.test('hostile tars: refused with the reason, cache and sentinel unchanged', async (t) => {
    const layout = (dir: string): WriteEntry[] => {
      const out: WriteEntry[] = [{ name: 'oci-layout', data: fs.readFileSync(path.join(dir, 'oci-layout')) }];
      const index = JSON.parse(fs.readFileSync(path.join(dir, 'index.json'), 'utf8')) as { manifests: Array<{ annotations: Record<string, string> }> };
      index.manifests[0]!.annotations['org.opencontainers.image.ref.name'] = 'docker.io/library/imported:v1';
      out.push({ name: 'index.json', data: Buffer.from(JSON.stringify(index)) });
      for (const f of fs.readdirSync(path.join(dir, 'blobs/sha256'))) out.push({ name: `blobs/sha256/${f}`, data: fs.readFileSync(path.join(dir, 'blobs/sha256', f)) });
      return out;
    };
    const small = await makeImage(path.join(work, 'small'), { layers: 1, layerSize: 3000, seed: 'small', tag: 'v1' });
    const good = layout(small.layoutDir);
    const idx = (desc: Record<string, unknown>) => ({ name: 'index.json', data: Buffer.from(JSON.stringify({ schemaVersion: 2, manifests: [desc] })) });
    // A "manifest" of 5 MiB: no registry serves one (berth's upstream client and Distribution stop at 4 MiB).
    const big = Buffer.alloc(5 * 1024 * 1024, 0x20);
    big.write('{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}');
    const bigDigest = sha256Digest(big);
    const cases: { name: string; entries: WriteEntry[]; why: RegExp }[] = [
      {
        name: 'a manifest over 4 MiB',
        entries: [good[0]!, idx({ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: bigDigest, size: big.length, annotations: { 'org.opencontainers.image.ref.name': 'docker.io/library/big:v1' } }), { name: `blobs/sha256/${bigDigest.slice(7)}`, data: big }],
        why: /manifest sha256:[0-9a-f]{64} is 5242880 bytes, more than the 4194304/,
      },
      { name: 'oci-layout is null', entries: [{ name: 'oci-layout', data: Buffer.from('null') }, ...good.slice(1)], why: /oci-layout has no imageLayoutVersion/ },
      { name: 'oci-layout is a list', entries: [{ name: 'oci-layout', data: Buffer.from('[1]') }, ...good.slice(1)], why: /oci-layout has no imageLayoutVersion/ },
      { name: 'index.json names a missing manifest', entries: [good[0]!, idx({ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: `sha256:${'b'.repeat(64)}`, size: 3 }), ...good.slice(2)], why: /manifest sha256:b{64} is missing from the archive/ },
      { name: 'pax-style long ../ name', entries: [...good, { name: `${'x/'.repeat(60)}../../../../sentinel/evil`, data: Buffer.from('x') }], why: /outside the layout/ },
      { name: 'a directory named like a blob', entries: [...good, { name: `blobs/sha256/${'c'.repeat(64)}/`, type: 'directory' }], why: /only regular files/ },
    ];
    for (const c of cases) {
      const file = path.join(work, `${c.name.replace(/\W+/g, '-')}.tar`);
      await writeTar(file, c.entries);
      const before = cacheState(berth.cacheDir);
      const r = await berth.cli(['import', file]);
      t.equal(r.code, 1, `${c.name}: exit 1`);
      t.match(r.stderr, c.why, `${c.name}: says why (${r.stderr.trim().split('\n').pop()})`);
      t.notMatch(r.stderr, STACK_RE, `${c.name}: no stack trace`);
      t.notMatch(r.stderr, /Cannot read properties|TypeError|undefined/, `${c.name}: no JavaScript internals`);
      t.same(cacheState(berth.cacheDir), before, `${c.name}: cache unchanged`);
    }
    const ok = path.join(work, 'good.tar');
    await writeTar(ok, good);
    const r = await berth.cli(['import', ok]);
    t.equal(r.code, 0, `the good tar still imports: ${r.stderr.trim()}`);
    await alive(t, 'imports');
  });

  t.same([...treeSnapshot(parent, berth.cacheDir)].filter(([p, v]) => besideBefore.get(p) !== v).map(([p]) => p), [], 'nothing beside the cache dir changed');
  t.same([...treeSnapshot(parent, berth.cacheDir).keys()].sort(), [...besideBefore.keys()].sort(), 'nothing beside the cache dir created or removed');
  t.equal(fs.readFileSync(path.join(sentinel, 'keep.txt'), 'utf8'), 'keep\n');
});
