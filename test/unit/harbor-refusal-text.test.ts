/**
 * Harbor's refusal text after a HEAD, against a loopback server that answers
 * like Harbor's /v2 (reference §2): a refused HEAD is a bare 412, a refused
 * GET a 412 with `{"errors":[{"code":"PROJECTPOLICYVIOLATION","message":…}]}`.
 * The real upstream client and manifest cache: the refusal a client gets is
 * worded by Harbor whether berth asked with HEAD or GET, and it holds while
 * Harbor is away, ahead of a stale tag.
 */
import { once } from 'node:events';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import t from 'tap';
import { ManifestCache, headManifestWithReason } from '../../src/cache/manifests.js';
import { Index } from '../../src/store/index-db.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { sha256 } from '../../src/oci/digest.js';
import { MEDIA_TYPES } from '../../src/oci/mediatypes.js';
import { OciError } from '../../src/oci/errors.js';
import { createRegistryClient } from '../../src/upstream/client.js';
import { UpstreamError, type RegistryClient } from '../../src/upstream/types.js';

const TEXT =
  `current image with 2 vulnerabilities cannot be pulled due to configured policy in 'Prevent images with vulnerability severity of "High" or higher from running.' ` +
  'To continue with pull, please contact your project administrator to exempt matched vulnerabilities through configuring the CVE allowlist.';
const MANIFEST = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPES.ociManifest, config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: 'sha256:' + 'c'.repeat(64), size: 2 }, layers: [] }));
const DIGEST = sha256(MANIFEST);

interface Harbor {
  url: string;
  /** Method and path of every request. */
  hits: string[];
  /** What the policy says: refused, or not. */
  refusing: boolean;
  /** Answer the next GET with this status instead (then back to normal). */
  nextGetStatus: number | null;
  /** Refuse the HEAD, then let the GET through (the policy changed in between). */
  flipAfterHead: boolean;
  stop(): Promise<void>;
}

async function startHarbor(t: { teardown(fn: () => unknown): void }): Promise<Harbor> {
  const h = { hits: [] as string[], refusing: true, nextGetStatus: null as number | null, flipAfterHead: false };
  const server = http.createServer((req, res) => {
    h.hits.push(`${req.method} ${req.url}`);
    if (!req.url?.startsWith('/v2/edge/app/manifests/')) {
      res.writeHead(req.url === '/v2/' ? 200 : 404).end();
      return;
    }
    if (req.method === 'GET' && h.nextGetStatus !== null) {
      res.writeHead(h.nextGetStatus).end();
      h.nextGetStatus = null;
      return;
    }
    if (h.refusing) {
      if (req.method === 'HEAD' && h.flipAfterHead) h.refusing = false;
      // Node sends no body on HEAD, as Harbor does not.
      res.writeHead(412, { 'Content-Type': 'application/json; charset=utf-8' }).end(JSON.stringify({ errors: [{ code: 'PROJECTPOLICYVIOLATION', message: TEXT }] }));
      return;
    }
    res.writeHead(200, { 'Content-Type': MEDIA_TYPES.ociManifest, 'Docker-Content-Digest': DIGEST, 'Content-Length': String(MANIFEST.length) }).end(req.method === 'HEAD' ? undefined : MANIFEST);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  let up = true;
  const stop = async (): Promise<void> => {
    if (!up) return;
    up = false;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  t.teardown(stop);
  return Object.assign(h, { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, stop });
}

function client(t: { teardown(fn: () => unknown): void }, url: string): RegistryClient {
  const c = createRegistryClient({
    registry: 'harbor.test',
    url,
    timeouts: { connectMs: 1000, headersMs: 2000, bodyIdleMs: 2000 },
    logger: pino({ level: 'silent' }),
    retry: { maxRetries: 0 },
    pool: { keepAliveTimeoutMs: 10 },
  });
  t.teardown(() => c.close());
  return c;
}

function cache(t: { teardown(fn: () => unknown): void }) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'berth-412-'));
  const index = new Index(path.join(dir, 'index.db'));
  t.teardown(() => {
    index.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  let now = 1_000_000;
  const mc = new ManifestCache(index.content, index.refusals, new Metrics({ defaultMetrics: false }), pino({ level: 'silent' }), { tagTtlMs: 60_000, serveStale: true, revalidateTimeoutMs: 3_000, now: () => now });
  return { mc, index, advance: (ms: number) => (now += ms) };
}

async function refusal(p: Promise<unknown>): Promise<OciError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof OciError) return err;
    throw err;
  }
  throw new Error('expected a refusal, got an answer');
}

const req = (c: RegistryClient, reference: string, head = false) => ({ client: c, repository: 'edge/app', reference, byDigest: reference.startsWith('sha256:'), head, accept: `${MEDIA_TYPES.ociManifest}, ${MEDIA_TYPES.ociIndex}` });

t.test("headManifestWithReason: a bare 412 is asked again with a GET, which brings Harbor's words", async (t) => {
  const harbor = await startHarbor(t);
  const c = client(t, harbor.url);
  await t.rejects(c.headManifest('edge/app', 'v1'), { code: 'UPSTREAM_POLICY', upstreamMessage: undefined }, 'the HEAD alone has no words');
  harbor.hits.length = 0;
  const err = await headManifestWithReason(c, 'edge/app', 'v1').then(
    () => null,
    (e: unknown) => e,
  );
  t.ok(err instanceof UpstreamError);
  t.match(err, { code: 'UPSTREAM_POLICY', upstreamMessage: TEXT });
  t.same(harbor.hits, ['HEAD /v2/edge/app/manifests/v1', 'GET /v2/edge/app/manifests/v1'], 'one GET more, after the refusal');

  harbor.refusing = false;
  harbor.hits.length = 0;
  t.match(await headManifestWithReason(c, 'edge/app', 'v1'), { digest: DIGEST });
  t.same(harbor.hits, ['HEAD /v2/edge/app/manifests/v1'], 'an allowed HEAD costs nothing more');

  harbor.refusing = true;
  harbor.flipAfterHead = true;
  t.match(await headManifestWithReason(c, 'edge/app', 'v1'), { digest: DIGEST, mediaType: MEDIA_TYPES.ociManifest, size: MANIFEST.length }, 'the policy changed in between: the GET answer stands');

  harbor.refusing = true;
  harbor.flipAfterHead = false;
  harbor.nextGetStatus = 500;
  await t.rejects(headManifestWithReason(c, 'edge/app', 'v1'), { code: 'UPSTREAM_POLICY', upstreamMessage: undefined }, 'a GET failing otherwise: the HEAD refusal stands');
});

t.test("GET by tag after berth's revalidating HEAD: Harbor's words, online and with Harbor gone", async (t) => {
  const harbor = await startHarbor(t);
  const c = client(t, harbor.url);
  const { mc, advance } = cache(t);
  harbor.refusing = false;
  t.equal((await mc.get(req(c, 'v1'))).digest, DIGEST, 'pulled while allowed: the tag is known');
  harbor.refusing = true;
  advance(61_000);
  harbor.hits.length = 0;
  const online = await refusal(mc.get(req(c, 'v1')));
  t.match(online, { code: 'PROJECTPOLICYVIOLATION', message: TEXT });
  t.equal(harbor.hits[0], 'HEAD /v2/edge/app/manifests/v1', 'revalidated with a HEAD');

  await harbor.stop();
  advance(61_000);
  const offline = await refusal(mc.get(req(c, 'v1')));
  t.match(offline, { code: 'PROJECTPOLICYVIOLATION', message: TEXT }, "refused in Harbor's words, not answered with the stale digest");
});

t.test("a tag and a digest refused only to the client's HEADs keep Harbor's words for a GET while Harbor is away", async (t) => {
  const harbor = await startHarbor(t);
  const c = client(t, harbor.url);
  const { mc } = cache(t);
  for (const ref of ['v1', DIGEST]) t.match(await refusal(mc.get(req(c, ref, true))), { code: 'PROJECTPOLICYVIOLATION' }, `HEAD ${ref}`);
  await harbor.stop();
  for (const ref of ['v1', DIGEST]) t.match(await refusal(mc.get(req(c, ref))), { code: 'PROJECTPOLICYVIOLATION', message: TEXT }, `GET ${ref}`);
});

t.test('a success clears the refusal: a stale tag is served again while Harbor is away', async (t) => {
  const harbor = await startHarbor(t);
  const c = client(t, harbor.url);
  const { mc, advance } = cache(t);
  harbor.refusing = false;
  await mc.get(req(c, 'v1'));
  harbor.refusing = true;
  advance(61_000);
  await refusal(mc.get(req(c, 'v1')));
  harbor.refusing = false;
  advance(61_000);
  t.equal((await mc.get(req(c, 'v1'))).source, 'cache', 'allowed again, unchanged');
  await harbor.stop();
  advance(61_000);
  const stale = await mc.get(req(c, 'v1'));
  t.equal(stale.source, 'stale');
  t.equal(stale.digest, DIGEST);
});
