/**
 * berth behind a fault-injecting proxy in front of a real Distribution: every
 * client gets the right bytes or a clean error, interrupted fills resume with
 * Range, nothing that failed verification is cached, retries are bounded and
 * honour Retry-After, Authorization stays home on a cross-host redirect, and
 * every answer comes within the configured timeouts.
 *
 * Timeouts are short (connect 1s, headers 2s, body 2s) so the slow cases stay
 * quick; the time bounds asserted are generous multiples of them.
 */
import t from 'tap';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { startTokenServer } from '../harness/token-server.js';
import { startRegistry } from '../harness/registry.js';
import { makeImage, pushImage, readBlob } from '../harness/images.js';
import { startBerth, type Berth } from '../harness/berth.js';
import { tempDirFor, waitFor } from '../harness/procs.js';
import { fetchOnce, inspectCache, outcomeOf, startFaultProxy, startOrigin, type Fetched, type FaultRule, type Outcome } from '../harness/fault-proxy.js';

const TIMEOUTS = { connect_timeout: '1s', header_timeout: '2s', body_timeout: '2s' };
const REPO = 'library/faults';

t.test('berth behind a faulty upstream', async (t) => {
  const token = await startTokenServer(t, { users: { pusher: 'push-secret' } });
  const registry = await startRegistry(t, { token });
  const work = await tempDirFor(t, 'berth-faults');
  // 28 incompressible ~1 MB layers: one fresh (uncached) blob per case.
  const img = await makeImage(path.join(work, 'img'), { layers: 28, layerSize: 1_000_000, seed: 'faults', tag: 'v1' });
  const other = await makeImage(path.join(work, 'other'), { layers: 1, layerSize: 10_000, seed: 'faults-other', tag: 'v1' });
  await pushImage(img.layoutDir, 'v1', registry, `${REPO}:v1`, { creds: 'pusher:push-secret' });
  await pushImage(other.layoutDir, 'v1', registry, 'library/other:v1', { creds: 'pusher:push-secret' });

  const layers = [...img.manifests[0]!.layers];
  const bytes = new Map<string, Buffer>();
  for (const d of layers) bytes.set(d, await readBlob(img.layoutDir, d));
  let next = 0;
  const freshLayer = (): { digest: string; data: Buffer } => {
    const digest = layers[next++];
    if (!digest) throw new Error('out of fresh layers: make the image bigger');
    return { digest, data: bytes.get(digest)! };
  };

  const proxy = await startFaultProxy(t, { target: registry.url });
  const berth = await startBerth(t, { upstreams: [{ registry: 'docker.io', url: proxy.url, ...TIMEOUTS }] });
  const blobUrl = (b: Berth, digest: string, repo = REPO) => `${b.url}/v2/${repo}/blobs/${digest}?ns=docker.io`;
  const blobPath = (digest: string) => new RegExp(`/blobs/${digest}$`);
  /** A rule for the authorized blob GET (berth's anonymous first try is answered by Distribution with a 401). */
  const onBlob = (digest: string, fault: FaultRule['fault'], times?: number) =>
    proxy.addRule({ method: 'GET', path: blobPath(digest), authorized: true, fault, ...(times === undefined ? {} : { times }) });
  const upstreamGets = (digest: string, since = 0) => proxy.requests({ method: 'GET', pathRe: blobPath(digest), since }).filter((r) => r.authorized);

  // Learn the token flow once, so every later upstream request carries a token.
  const warm = await fetchOnce(`${berth.url}/v2/${REPO}/manifests/v1?ns=docker.io`);
  t.equal(warm.status, 200, 'manifest through the proxy');

  const cached = async (b: Berth, digest: string) => {
    const report = await inspectCache(b.cacheDir);
    return { onDisk: report.files.has(digest), indexed: report.indexed.has(digest), report };
  };
  /** A client gets its last byte once the digest matched; the fsync, rename and index row follow a moment later. */
  const cachedSoon = async (b: Berth, digest: string) => {
    let last = await cached(b, digest);
    await waitFor(`${digest.slice(7, 19)} cached`, async () => {
      last = await cached(b, digest);
      return last.onDisk && last.indexed;
    }, { timeoutMs: 10_000, intervalMs: 50 }).catch(() => undefined);
    return last;
  };

  await t.test('an interrupted fill resumes with Range from the bytes already held', async (t) => {
    const { digest, data } = freshLayer();
    onBlob(digest, { kind: 'truncate', afterBytes: 300_000 }, 1);
    const got = await fetchOnce(blobUrl(berth, digest));
    t.equal(outcomeOf(got, data), 'exact', `the client got exact bytes (${got.status}, ${got.body.length} bytes)`);
    const gets = upstreamGets(digest);
    const held = resumedFrom(berth, digest);
    // Bytes still buffered in the body stream when the error arrived are dropped: berth resumes from what it wrote.
    t.ok(held.length === 1 && held[0]! > 0 && held[0]! <= 300_000, `berth logged one resume, from what it held (${held.join(', ')})`);
    t.same(gets.map((r) => r.range ?? null), [null, `bytes=${held[0]}-`], 'one truncated GET, then a Range request from exactly the bytes held');
    t.same(gets.map((r) => r.status), [200, 206], 'the upstream honoured the Range');
    const c = await cachedSoon(berth, digest);
    t.ok(c.onDisk && c.indexed, 'the resumed blob is cached and indexed');
    t.same(c.report.problems, [], 'index and disk agree');
  });

  await t.test('a connection reset mid-body resumes from what arrived', async (t) => {
    const { digest, data } = freshLayer();
    onBlob(digest, { kind: 'reset', afterBytes: 400_000 }, 1);
    const got = await fetchOnce(blobUrl(berth, digest));
    t.equal(outcomeOf(got, data), 'exact', 'the client got exact bytes');
    const gets = upstreamGets(digest);
    const held = resumedFrom(berth, digest);
    t.ok(held.length === 1 && held[0]! > 0 && held[0]! <= 400_000, `resumed once, after byte 0, at most from what was sent (${held.join(', ')})`);
    t.same(gets.map((r) => r.range ?? null), [null, `bytes=${held[0]}-`], 'one reset GET, then a Range request from the bytes held');
  });

  await t.test('an upstream that ignores Range: its 200 is skipped to the offset', async (t) => {
    const { digest, data } = freshLayer();
    onBlob(digest, { kind: 'truncate', afterBytes: 250_000 }, 1);
    onBlob(digest, { kind: 'ignoreRange' });
    const got = await fetchOnce(blobUrl(berth, digest));
    t.equal(outcomeOf(got, data), 'exact', 'the client got exact bytes');
    const gets = upstreamGets(digest);
    const held = resumedFrom(berth, digest);
    t.same(gets.map((r) => r.range ?? null), [null, `bytes=${held[0] ?? '?'}-`], 'berth asked for the rest');
    t.same(gets.map((r) => r.status), [200, 200], 'and got the whole blob again');
    t.ok((await cachedSoon(berth, digest)).indexed, 'cached');
  });

  await t.test('every fault: each client gets the right bytes or a clean error; nothing bad is cached', async (t) => {
    const mismatchesBefore = await digestMismatches(berth);
    // maxGets: 1 + berth's 3 resumes for body faults; 1 + 2 retries for 5xx; a digest mismatch is final.
    const cases: Array<{ name: string; fault: (size: number) => FaultRule['fault']; times?: number; maxGets: number }> = [
      { name: 'a flipped byte, always', fault: () => ({ kind: 'flip', offset: 123_456 }), maxGets: 1 },
      // The hold-back guard: everything but the last byte is right, so only verification can stop it.
      { name: 'the last byte flipped, always', fault: (size) => ({ kind: 'flip', offset: size - 1 }), maxGets: 1 },
      { name: 'truncated bodies, always', fault: () => ({ kind: 'truncate', afterBytes: 200_000 }), maxGets: 4 },
      { name: 'resets mid-body, always', fault: () => ({ kind: 'reset', afterBytes: 150_000 }), maxGets: 4 },
      { name: '500, always', fault: () => ({ kind: 'status', status: 500 }), maxGets: 3 },
      { name: '503, always', fault: () => ({ kind: 'status', status: 503 }), maxGets: 3 },
      { name: 'a flipped byte, once', fault: () => ({ kind: 'flip', offset: 7 }), times: 1, maxGets: 1 },
    ];
    const runs = cases.map(async (c) => {
      const { digest, data } = freshLayer();
      const rule = onBlob(digest, c.fault(data.length), c.times);
      const mark = proxy.mark();
      // Three whole-blob clients and one Range client, all at once, all on one cold blob.
      const results = await Promise.all([
        fetchOnce(blobUrl(berth, digest)),
        fetchOnce(blobUrl(berth, digest)),
        fetchOnce(blobUrl(berth, digest)),
        fetchOnce(blobUrl(berth, digest), { headers: { Range: 'bytes=1000-1999' } }),
      ]);
      const outcomes: Outcome[] = results.map((r, i) => outcomeOf(r, i === 3 ? data.subarray(1000, 2000) : data));
      const gets = upstreamGets(digest, mark).length;
      rule.remove();
      const after = await cached(berth, digest);
      const again = await fetchOnce(blobUrl(berth, digest));
      const later = await cachedSoon(berth, digest);
      return { c, digest, data, outcomes, results, gets, after, again, later };
    });
    for (const r of await Promise.all(runs)) {
      t.test(r.c.name, async (t) => {
        t.notOk(r.outcomes.includes('wrong'), `no client got a wrong answer: ${r.outcomes.join(', ')}`);
        t.notOk(r.outcomes.includes('exact'), 'no client got a complete answer from a failed transfer');
        t.notOk(r.after.onDisk || r.after.indexed, 'nothing cached under the digest');
        // Other cases run at the same time: only this digest's temp files are this case's.
        t.same(r.after.report.tmp.filter((f) => f.startsWith(r.digest.slice(7))), [], 'no temp file left');
        t.ok(r.gets >= 1 && r.gets <= r.c.maxGets, `bounded upstream GETs: ${r.gets} <= ${r.c.maxGets}`);
        t.equal(outcomeOf(r.again, r.data), 'exact', 'with a clean upstream, a later request gets exact bytes');
        t.ok(r.later.onDisk && r.later.indexed, 'and the blob is then cached');
      });
    }
    t.same((await inspectCache(berth.cacheDir, { rehash: true })).problems, [], 'once all are done: index and disk agree, every blob hashes to its name');
    t.ok((await digestMismatches(berth)) >= mismatchesBefore + 3, 'discarded transfers counted in berth_digest_mismatches_total');
  });

  await t.test('a manifest that fails its digest is never stored', async (t) => {
    const digest = other.manifestDigest;
    const url = `${berth.url}/v2/library/other/manifests/${digest}?ns=docker.io`;
    const rule = proxy.addRule({ method: 'GET', path: new RegExp(`/manifests/${digest}$`), authorized: true, fault: { kind: 'flip', offset: 10 } });
    const bad = await fetchOnce(url);
    t.equal(bad.status, 502, `502 (${bad.status})`);
    t.match(JSON.parse(bad.body.toString('utf8')), { errors: [{ code: 'BAD_GATEWAY' }] });
    t.notOk((await inspectCache(berth.cacheDir)).manifests.has(digest), 'not in the index');
    rule.remove();
    const good = await fetchOnce(url);
    t.equal(good.status, 200);
    t.equal(good.headers['docker-content-digest'], digest);
    t.equal(sha256(good.body), digest, 'with a clean upstream: the verbatim manifest');
    t.ok((await inspectCache(berth.cacheDir, { rehash: true })).manifests.has(digest), 'and it is stored');
  });

  await t.test('429 with Retry-After is honoured, and retries are bounded', async (t) => {
    const once = freshLayer();
    onBlob(once.digest, { kind: 'status', status: 429, headers: { 'retry-after': '1' } }, 1);
    const ok = await fetchOnce(blobUrl(berth, once.digest));
    t.equal(outcomeOf(ok, once.data), 'exact', 'a single 429 is retried and the client gets the blob');
    const [first, second] = upstreamGets(once.digest);
    t.ok(first && second && second.at - first.at >= 900, `the retry waited for Retry-After (${(second?.at ?? 0) - (first?.at ?? 0)} ms)`);

    const always = freshLayer();
    onBlob(always.digest, { kind: 'status', status: 429, headers: { 'retry-after': '1' } });
    const limited = await fetchOnce(blobUrl(berth, always.digest));
    t.equal(limited.status, 429, 'a persistent 429 reaches the client as 429');
    t.ok(Number(limited.headers['retry-after']) >= 1, `with Retry-After (${limited.headers['retry-after']})`);
    t.equal(outcomeOf(limited, always.data), 'error', 'in the OCI envelope');
    t.equal(upstreamGets(always.digest).length, 3, 'one try and two retries, no more');

    const long = freshLayer();
    onBlob(long.digest, { kind: 'status', status: 429, headers: { 'retry-after': '120' } });
    const refused = await fetchOnce(blobUrl(berth, long.digest));
    t.equal(refused.status, 429, 'a Retry-After longer than berth may hold a client: 429 at once');
    t.equal(refused.headers['retry-after'], '120', 'passing the upstream\'s Retry-After on');
    t.equal(upstreamGets(long.digest).length, 1, 'and no retry');
    t.ok(refused.ms < 3_000, `quickly (${refused.ms} ms)`);
  });

  await t.test('Authorization never reaches the redirect target on another host', async (t) => {
    const { digest, data } = freshLayer();
    const origin = await startOrigin(t, { host: '127.0.0.2', lookup: (p) => (p === `/objects/${digest.slice(7)}` ? data : undefined) });
    onBlob(digest, { kind: 'redirect', status: 307, location: `${origin.url}/objects/${digest.slice(7)}?X-Amz-Signature=test` });
    const got = await fetchOnce(blobUrl(berth, digest));
    t.equal(outcomeOf(got, data), 'exact', 'the blob arrives through the redirect');
    t.ok(upstreamGets(digest).length >= 1, 'berth sent its token to the registry');
    t.ok(origin.requests.length >= 1, 'and followed the redirect');
    t.same(origin.requests.filter((r) => r.authorized), [], 'the other host never saw an Authorization header');
  });

  await t.test('a resumed transfer through a redirect keeps Authorization home too', async (t) => {
    const { digest, data } = freshLayer();
    const origin = await startOrigin(t, { host: '127.0.0.2', lookup: (p) => (p === `/objects/${digest.slice(7)}` ? data : undefined) });
    onBlob(digest, { kind: 'truncate', afterBytes: 333_333 }, 1);
    // Only the resume (the request with Range) is sent to the other host.
    proxy.addRule({ method: 'GET', path: blobPath(digest), ranged: true, fault: { kind: 'redirect', status: 307, location: `${origin.url}/objects/${digest.slice(7)}` } });
    const got = await fetchOnce(blobUrl(berth, digest));
    t.equal(outcomeOf(got, data), 'exact', 'exact bytes');
    t.same(origin.requests.map((r) => r.range ?? null), ['bytes=333333-'], 'the origin served the rest with Range');
    t.same(origin.requests.filter((r) => r.authorized), [], 'without Authorization');
  });

  await t.test('redirect loops end in a clean, quick error', async (t) => {
    for (const sameUrl of [false, true]) {
      const { digest, data } = freshLayer();
      onBlob(digest, { kind: 'redirectLoop', sameUrl });
      const got = await fetchOnce(blobUrl(berth, digest));
      t.equal(outcomeOf(got, data), 'error', `${sameUrl ? 'to itself' : 'a fresh URL each hop'}: a clean error (${got.status})`);
      t.ok(got.status === 502 || got.status === 503, `a gateway error, not a 500 (${got.status})`);
      t.ok(got.ms < 10_000, `within 10 s (${got.ms} ms)`);
      const hops = proxy.requests({ method: 'GET', pathRe: blobPath(digest) }).filter((r) => r.authorized).length;
      t.ok(hops <= 3 * 6, `bounded hops (${hops})`);
      t.notOk((await cached(berth, digest)).onDisk, 'nothing cached');
    }
  });

  // Regression: undici's "Redirect loop detected" was classified as unreachable and opened the circuit.
  await t.test('a redirect loop does not count as an unreachable upstream nor open the circuit breaker', async (t) => {
    // Three blobs whose object storage loops must not take every other pull down with them.
    for (let i = 0; i < 3; i++) {
      const { digest } = freshLayer();
      onBlob(digest, { kind: 'redirectLoop', sameUrl: true });
      await fetchOnce(blobUrl(berth, digest));
    }
    const { digest, data } = freshLayer();
    const got = await fetchOnce(blobUrl(berth, digest));
    t.equal(outcomeOf(got, data), 'exact', `an unrelated blob still fills (${got.status} ${got.body.toString('utf8').slice(0, 160)})`);
  });

  await t.test('answers come within the configured timeouts', async (t) => {
    // A berth of its own: stalls count against its circuit breaker, which would disturb the cases above.
    const slow = await startBerth(t, { upstreams: [{ registry: 'docker.io', url: proxy.url, ...TIMEOUTS }] });
    t.equal((await fetchOnce(`${slow.url}/v2/${REPO}/manifests/v1?ns=docker.io`)).status, 200, 'warm');

    await t.test('a trickle slower than body_timeout in total but never silent that long completes', async (t) => {
      const { digest, data } = freshLayer();
      onBlob(digest, { kind: 'trickle', chunkBytes: 64 * 1024, intervalMs: 250 });
      const got = await fetchOnce(blobUrl(slow, digest));
      t.equal(outcomeOf(got, data), 'exact', `exact bytes after ${got.ms} ms`);
      t.ok(got.ms > 2_000, 'the transfer outlasted body_timeout (an idle limit, not a total one)');
      t.equal(upstreamGets(digest).length, 1, 'in one upstream GET');
    });

    await t.test('a body that stalls: resumed, then given up; the client sees a truncated body', async (t) => {
      const { digest, data } = freshLayer();
      onBlob(digest, { kind: 'stallBody', afterBytes: 100_000 });
      const got = await fetchOnce(blobUrl(slow, digest));
      proxy.releaseStalls();
      t.equal(outcomeOf(got, data), 'truncated', `truncated (${got.status}, ${got.body.length} bytes)`);
      t.ok(got.ms < 4 * 2_000 + 10_000, `within (1 + 3 resumes) x body_timeout + margin (${got.ms} ms)`);
      t.same(upstreamGets(digest).map((r) => r.range ?? null), [null, 'bytes=100000-', 'bytes=200000-', 'bytes=300000-'], 'each resume from where the last one stalled');
      t.notOk((await cached(slow, digest)).onDisk, 'nothing cached');
    });

    await t.test('headers that never come: 503 within header_timeout + margin, three times', async (t) => {
      const stalls: Fetched[] = [];
      const rule = proxy.addRule({ method: 'GET', path: /^\/v2\/library\/other\//, authorized: true, fault: { kind: 'stallHeaders' } });
      // The first request of a new repository scope also fetches a token (not through the proxy).
      stalls.push(await fetchOnce(`${slow.url}/v2/library/other/manifests/v1?ns=docker.io`));
      stalls.push(await fetchOnce(blobUrl(slow, other.manifests[0]!.layers[0]!, 'library/other')));
      stalls.push(await fetchOnce(blobUrl(slow, other.manifests[0]!.config, 'library/other')));
      rule.remove();
      proxy.releaseStalls();
      for (const s of stalls) {
        t.equal(s.status, 503, `503 (${s.status})`);
        t.match(JSON.parse(s.body.toString('utf8') || '{}'), { errors: [{ code: 'UNAVAILABLE' }] });
        t.ok(s.ms < 10_000, `in ${s.ms} ms`);
      }

      // Three consecutive timeouts opened the circuit: the next miss fails at once, without a request.
      const { digest } = freshLayer();
      const mark = proxy.mark();
      const fast = await fetchOnce(blobUrl(slow, digest));
      t.equal(fast.status, 503, 'the circuit is open: 503');
      t.ok(fast.ms < 1_000, `at once (${fast.ms} ms)`);
      t.equal(upstreamGets(digest, mark).length, 0, 'without waiting on the upstream again');
    });

    t.equal((await fetchOnce(`${slow.url}/healthz`)).status, 200, 'berth stays healthy throughout');
  });

  t.equal((await fetchOnce(`${berth.url}/healthz`)).status, 200, 'berth stays healthy throughout');
});

const sha256 = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** Offsets berth logged when it resumed a transfer of `digest` (the bytes it held on disk). */
function resumedFrom(b: Berth, digest: string): number[] {
  return b
    .logs()
    .filter((l) => l.digest === digest && typeof l.msg === 'string' && l.msg.includes('resuming with Range'))
    .map((l) => Number(l.offset));
}

async function digestMismatches(b: Berth): Promise<number> {
  const text = (await fetchOnce(`${b.url}/metrics`)).body.toString('utf8');
  return Number(/^berth_digest_mismatches_total\{[^}]*\} (\d+)/m.exec(text)?.[1] ?? 0);
}
