/**
 * The soak (long; not part of `npm test`): SOAK_CLIENTS (200) concurrent
 * clients pull through berth over real HTTP for SOAK_SECONDS (120) from a real
 * Distribution behind a token server. Most pulls are of images already cached;
 * every few seconds a new image is released and the next pulls of it are cold
 * (one upstream fill, many coalesced waiters), then warm. Tags revalidate
 * every 10 s, as a short tag_ttl would make them.
 *
 * A pull is what containerd does: the manifest by tag, then the config and
 * every layer by digest, each body checked against its digest. Any non-200,
 * short body or digest mismatch is an error. berth's RSS is sampled every
 * second; the first and last 30 s must be flat. Results go to
 * test/soak/RESULTS.md; the exit code is 1 when the soak failed.
 *
 * Run: npm run soak   (tsc -p tsconfig.soak.json && node dist-soak/test/soak/soak.js)
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'smol-toml';
import { freePort, spawnService, tempDirFor, waitForHttp, type Teardown } from '../harness/procs.js';
import { startTokenServer } from '../harness/token-server.js';
import { startRegistry } from '../harness/registry.js';
import { makeImage, pushImage, type TestImage } from '../harness/images.js';
import { unitEnv } from '../../bench/unit.js';

const SECONDS = Number(process.env.SOAK_SECONDS ?? 120);
/** The unit's Environment= the daemon ran with, for the report. */
let berthEnv = '';
const CLIENTS = Number(process.env.SOAK_CLIENTS ?? 200);
const CACHED_IMAGES = 6;
const FRESH_IMAGES = Number(process.env.SOAK_FRESH_IMAGES ?? 40);
/** Share of pulls that go to the most recently released (cold, then warm) image. */
const FRESH_SHARE = 0.25;
const WINDOW_S = 30;
/** What containerd 1.6 sends when it resolves a tag (a narrower Accept would never let berth remember the tag). */
const CONTAINERD_ACCEPT = [
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.oci.image.index.v1+json',
  '*/*',
].join(', ');

/** The checkout: the directory above this file with berth's package.json (works from test/ and from dist-soak/). */
function repoRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = path.join(dir, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'berth') return dir;
    const up = path.dirname(dir);
    if (up === dir) throw new Error('cannot find the berth checkout above the soak');
    dir = up;
  }
}

function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? 0) / 1024;
}

const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

const agent = new http.Agent({ keepAlive: true, maxSockets: CLIENTS + 16 });

function get(url: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.once('error', reject);
      res.once('end', () => {
        if (!res.complete) reject(new Error(`${url}: body cut short`));
        else resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) });
      });
    });
    req.setTimeout(60_000, () => req.destroy(new Error(`${url}: no answer in 60 s`)));
    req.once('error', reject);
  });
}

interface Image {
  repo: string;
  img: TestImage;
}

async function main(): Promise<number> {
  const root = repoRoot();
  const teardowns: Array<() => unknown> = [];
  const t: Teardown = { teardown: (fn) => void teardowns.push(fn) };
  const log = (msg: string): void => void process.stderr.write(`[soak] ${msg}\n`);
  try {
    const token = await startTokenServer(t, { users: { pusher: 'push-secret' } });
    const registry = await startRegistry(t, { token });
    const work = await tempDirFor(t, 'berth-soak');

    log(`building and pushing ${CACHED_IMAGES} cached and ${FRESH_IMAGES} fresh images`);
    const build = async (name: string, i: number, layers: number, layerSize: number): Promise<Image> => {
      const img = await makeImage(path.join(work, `${name}-${i}`), { layers, layerSize, seed: `soak-${name}-${i}`, tag: 'v1' });
      const repo = `soak/${name}-${i}`;
      await pushImage(img.layoutDir, 'v1', registry, `${repo}:v1`, { creds: 'pusher:push-secret' });
      return { repo, img };
    };
    const inParallel = async <T>(n: number, width: number, fn: (i: number) => Promise<T>): Promise<T[]> => {
      const out: T[] = new Array<T>(n);
      let next = 0;
      await Promise.all(Array.from({ length: width }, async () => {
        for (let i = next++; i < n; i = next++) out[i] = await fn(i);
      }));
      return out;
    };
    const cached = await inParallel(CACHED_IMAGES, 3, (i) => build('cached', i, 3, 300_000));
    const fresh = await inParallel(FRESH_IMAGES, 3, (i) => build('fresh', i, 2, 150_000));

    const port = await freePort();
    const cacheDir = path.join(work, 'cache');
    const configFile = path.join(work, 'berth.toml');
    writeFileSync(
      configFile,
      stringify({
        server: { listen: `127.0.0.1:${port}`, drain_timeout: '5s' },
        cache: { dir: cacheDir, tag_ttl: '10s', serve_stale: true },
        log: { level: 'warn' },
        upstream: [{ registry: 'docker.io', url: registry.url }],
      }),
    );
    // berth runs as the systemd unit runs it (its NODE_OPTIONS heap settings): RSS is the unit's.
    const unit = unitEnv(path.join(root, 'systemd', 'berth.service'));
    berthEnv = Object.entries(unit.env).map(([k, v]) => `${k}=${v}`).join(' ') || 'none';
    const env = { ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('BERTH_'))), ...unit.env };
    const berth = spawnService('berth', process.execPath, [path.join(root, 'dist', 'cli', 'main.js'), 'serve', '--config', configFile], { env });
    t.teardown(() => berth.stop('SIGTERM', 10_000));
    const url = `http://127.0.0.1:${port}`;
    await waitForHttp(`${url}/readyz`, { timeoutMs: 30_000, ok: (s) => s === 200, abortOn: berth.exited });

    const errors: string[] = [];
    let errorCount = 0;
    const manifestMs: number[] = [];
    const blobMs: number[] = [];
    let pulls = 0;
    let requests = 0;
    let bytes = 0;
    const fail = (msg: string): void => {
      errorCount++;
      if (errors.length < 20) errors.push(msg);
    };

    const pull = async ({ repo, img }: Image): Promise<void> => {
      const m0 = performance.now();
      const m = await get(`${url}/v2/${repo}/manifests/v1?ns=docker.io`, { Accept: CONTAINERD_ACCEPT });
      manifestMs.push(performance.now() - m0);
      requests++;
      if (m.status !== 200 || sha256(m.body) !== img.manifestDigest) {
        fail(`${repo}:v1 manifest -> ${m.status}, ${m.status === 200 ? 'wrong digest' : m.body.toString('utf8').slice(0, 200)}`);
        return;
      }
      const manifest = JSON.parse(m.body.toString('utf8')) as { config: { digest: string; size: number }; layers: Array<{ digest: string; size: number }> };
      await Promise.all(
        [manifest.config, ...manifest.layers].map(async (d) => {
          const b0 = performance.now();
          const b = await get(`${url}/v2/${repo}/blobs/${d.digest}?ns=docker.io`);
          blobMs.push(performance.now() - b0);
          requests++;
          bytes += b.body.length;
          if (b.status !== 200 || b.body.length !== d.size || sha256(b.body) !== d.digest) fail(`${repo}@${d.digest} -> ${b.status}, ${b.body.length} of ${d.size} bytes`);
        }),
      );
      pulls++;
    };

    log('warming the cached set');
    for (const image of cached) await pull(image);
    manifestMs.length = 0;
    blobMs.length = 0;

    log(`${CLIENTS} clients for ${SECONDS} s`);
    const started = Date.now();
    const deadline = started + SECONDS * 1000;
    const rss: Array<{ s: number; mib: number }> = [];
    const sampler = setInterval(() => {
      try {
        rss.push({ s: (Date.now() - started) / 1000, mib: rssMiB(berth.pid) });
      } catch {
        // berth gone: the errors will say so
      }
    }, 1000);
    // Release the fresh images one by one over the run.
    let released = 0;
    const releaseEvery = (SECONDS * 1000) / (FRESH_IMAGES + 1);
    const releaser = setInterval(() => {
      if (released < fresh.length) released++;
    }, releaseEvery);
    let seed = 12345;
    const rand = (): number => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed / 4294967296;
    };
    await Promise.all(
      Array.from({ length: CLIENTS }, async () => {
        while (Date.now() < deadline) {
          const image = released > 0 && rand() < FRESH_SHARE ? fresh[released - 1]! : cached[Math.floor(rand() * cached.length)]!;
          try {
            await pull(image);
          } catch (err) {
            fail(`${image.repo}: ${(err as Error).message}`);
          }
        }
      }),
    );
    clearInterval(sampler);
    clearInterval(releaser);
    const ranS = (Date.now() - started) / 1000;
    const metrics = (await get(`${url}/metrics`)).body.toString('utf8');
    const metric = (re: RegExp): string => metrics.split('\n').filter((l) => re.test(l)).join('; ') || 'n/a';

    const first = rss.filter((r) => r.s <= WINDOW_S).map((r) => r.mib);
    const last = rss.filter((r) => r.s >= ranS - WINDOW_S).map((r) => r.mib);
    const firstMean = mean(first);
    const lastMean = mean(last);
    // Flat: the last 30 s no more than 20% (and 32 MiB) above the first 30 s.
    const flat = lastMean <= firstMean * 1.2 + 32;
    const sortedM = [...manifestMs].sort((a, b) => a - b);
    const sortedB = [...blobMs].sort((a, b) => a - b);
    const alive = !berth.hasExited();
    const ok = errorCount === 0 && flat && alive;

    const f = (n: number): string => n.toFixed(1);
    const report = `# Soak results

Written by \`npm run soak\` (test/soak/soak.ts) on ${new Date().toISOString()}.

| | |
|---|---|
| verdict | **${ok ? 'PASS' : 'FAIL'}** |
| machine | ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}), ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}; clients and berth share it |
| berth's environment | \`${berthEnv}\` (systemd/berth.service's Environment=) |
| load | ${CLIENTS} concurrent clients for ${f(ranS)} s over keep-alive HTTP/1.1 |
| images | ${CACHED_IMAGES} cached (3 layers x 300 kB) pulled ~${Math.round((1 - FRESH_SHARE) * 100)}% of the time; ${released} of ${FRESH_IMAGES} fresh ones (2 layers x 150 kB) released one by one, each first pulled cold; tag_ttl 10 s |
| pulls | ${pulls} complete pulls, ${requests} requests, ${f(bytes / 2 ** 20)} MiB of blobs, every body checked against its digest |
| errors | ${errorCount}${errors.length ? `: ${errors.slice(0, 5).map((e) => `\`${e.replace(/`/g, "'")}\``).join('; ')}` : ''} |
| manifest latency | p50 ${f(quantile(sortedM, 0.5))} ms, p90 ${f(quantile(sortedM, 0.9))} ms, **p99 ${f(quantile(sortedM, 0.99))} ms**, max ${f(sortedM[sortedM.length - 1] ?? NaN)} ms (${sortedM.length} requests) |
| blob latency | p50 ${f(quantile(sortedB, 0.5))} ms, p99 ${f(quantile(sortedB, 0.99))} ms, max ${f(sortedB[sortedB.length - 1] ?? NaN)} ms |
| berth RSS | first ${WINDOW_S} s mean ${f(firstMean)} MiB, last ${WINDOW_S} s mean ${f(lastMean)} MiB, max ${f(Math.max(...rss.map((r) => r.mib)))} MiB: ${flat ? 'flat' : '**growing**'} (limit: last <= first x 1.2 + 32 MiB) |
| berth alive at the end | ${alive ? 'yes' : '**no**'} |
| berth's counters | ${metric(/^berth_cache_requests_total/)}; ${metric(/^berth_coalesced_waiters_total/)} |

RSS samples (s: MiB), every 10th: ${rss.filter((_, i) => i % 10 === 0).map((r) => `${Math.round(r.s)}: ${f(r.mib)}`).join(', ')}
`;
    const out = path.join(root, 'test', 'soak', 'RESULTS.md');
    writeFileSync(out, report);
    process.stdout.write(report);
    log(`${ok ? 'PASS' : 'FAIL'}; wrote ${out}`);
    return ok ? 0 : 1;
  } finally {
    agent.destroy();
    for (const fn of teardowns.reverse()) {
      try {
        await fn();
      } catch (err) {
        process.stderr.write(`[soak] teardown: ${(err as Error).message}\n`);
      }
    }
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`[soak] failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
    process.exit(1);
  },
);
