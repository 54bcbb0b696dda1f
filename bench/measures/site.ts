/**
 * 7. A site of three berths pulls one image on every node at the same
 * moment (issue 12): how many bytes cross the "WAN" (the upstream's access
 * log, 2xx GETs of the image's manifest and blobs, as a multiple of the
 * image's size), and how long until every node has served every blob.
 * Three berths with `[peers]` (static members on 127.0.0.1, .2 and .3, one
 * site key) against three without, in the same run: without peers each
 * node fetches the whole image itself (3x); with peers each blob should
 * cross once (1x). The time is compared with one berth, without peers,
 * pulling the image alone and cold. A node "pulls" as containerd does
 * without the unpack: the manifest by tag, then the config and every layer
 * at once, each body counted to its last byte.
 */
import { randomBytes } from 'node:crypto';
import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { MT } from '../../test/harness/images.js';
import { freePort, tempDirFor } from '../../test/harness/procs.js';
import { startBenchBerth, type BenchBerth } from '../berth.js';
import { makeStreamedImage } from '../images.js';
import { NS, TAG } from '../env.js';
import type { Scope } from '../scope.js';
import { MiB, now, summarize } from '../stats.js';
import type { Ctx, Measure } from './context.js';

const NODES = 3;
const REPO = 'library/site';

export function site(scope: Scope): Measure {
  return {
    id: 7,
    name: 'a site of 3 berths pulls one image at once',
    async run(ctx: Ctx) {
      const { env, client, plan } = ctx;
      const s = scope.child();
      const work = await tempDirFor(s, 'berth-bench-site');
      const img = await makeStreamedImage(path.join(work, 'img'), { layers: plan.siteLayers, layerSize: plan.siteLayerSize, seed: 'bench-site', tag: TAG });
      await env.push(img.layoutDir, REPO);
      await rm(img.layoutDir, { recursive: true, force: true });
      const manifest = img.manifests[0]!;
      const imageBytes = manifest.size + img.blobs.reduce((n, b) => n + b.size, 0);
      ctx.log(`  image ${REPO}:${TAG}: ${manifest.layers.length} layers, ${(imageBytes / MiB).toFixed(1)} MiB with config and manifest`);

      const keyFile = path.join(work, 'site.key');
      await writeFile(keyFile, randomBytes(32).toString('base64') + '\n', { mode: 0o600 });
      const members: string[] = [];
      for (let i = 1; i <= NODES; i++) members.push(`127.0.0.${i}:${await freePort()}`);
      const start = (peers: Record<string, unknown> | null): Promise<BenchBerth> =>
        startBenchBerth(s, { upstreams: env.berthUpstreams, ...env.berthOpts, ...(peers ? { extra: { peers } } : {}) });
      const peered = await Promise.all(members.map((listen) => start({ listen, key_file: keyFile, members })));
      const plain = await Promise.all(members.map(() => start(null)));
      ctx.log(`  with peers: ${peered.map((b, i) => `${b.url} (peer ${members[i]})`).join(', ')}; without: ${plain.map((b) => b.url).join(', ')}`);

      /** One node's pull: the manifest by tag, then every blob at once. */
      const pull = async (b: BenchBerth): Promise<void> => {
        await client.get(`${b.url}/v2/${REPO}/manifests/${TAG}?ns=${NS}`, manifest.size, { accept: MT.ociManifest });
        await Promise.all(img.blobs.map((bl) => client.get(`${b.url}/v2/${REPO}/blobs/${bl.digest}?ns=${NS}`, bl.size)));
      };
      /** Empties the nodes' caches, pulls on each at the same moment: seconds until the last has all. */
      const pullAt = async (nodes: BenchBerth[]): Promise<number> => {
        await Promise.all(nodes.map((b) => b.wipe()));
        const t0 = now();
        await Promise.all(nodes.map(pull));
        return (now() - t0) / 1000;
      };
      const transfers = (since: number) => env.upstream.requests({ method: 'GET', since }).filter((r) => r.status < 400 && r.path.startsWith(`/v2/${REPO}/`));
      /** Bytes the upstream sent for the image since `mark` (once its access log has every layer), and its blob GETs. */
      const upstreamSince = async (mark: number): Promise<{ bytes: number; blobGets: number }> => {
        const layers = (rs: ReturnType<typeof transfers>) => new Set(rs.map((r) => r.path.split('/blobs/')[1]).filter((d) => d !== undefined && manifest.layers.includes(d)));
        await env.upstream.waitForRequests(() => layers(transfers(mark)).size === manifest.layers.length, 30_000);
        await env.upstream.barrier();
        const rs = transfers(mark);
        return { bytes: rs.reduce((n, r) => n + r.bytes, 0), blobGets: rs.filter((r) => r.path.includes('/blobs/')).length };
      };

      const r = { oneS: [] as number[], plainS: [] as number[], plainX: [] as number[], siteS: [] as number[], siteX: [] as number[] };
      for (let i = 0; i < plan.runs; i++) {
        let mark = env.upstream.mark();
        r.oneS.push(await pullAt([plain[0]!]));
        await upstreamSince(mark);

        mark = env.upstream.mark();
        r.plainS.push(await pullAt(plain));
        const p = await upstreamSince(mark);
        r.plainX.push(p.bytes / imageBytes);

        mark = env.upstream.mark();
        r.siteS.push(await pullAt(peered));
        const q = await upstreamSince(mark);
        r.siteX.push(q.bytes / imageBytes);
        ctx.log(
          `  run ${i + 1}: one node alone ${r.oneS.at(-1)!.toFixed(2)} s; 3 without peers ${r.plainS.at(-1)!.toFixed(2)} s, ${p.blobGets} blob GETs, ${r.plainX.at(-1)!.toFixed(2)}x the image; ` +
            `3 with peers ${r.siteS.at(-1)!.toFixed(2)} s, ${q.blobGets} blob GETs, ${r.siteX.at(-1)!.toFixed(2)}x the image`,
        );
      }
      await s.close();

      const what = `${NODES} nodes pull one image at once (${manifest.layers.length} layers, ${(imageBytes / MiB).toFixed(0)} MiB)`;
      const siteS = summarize(r.siteS);
      ctx.add({ measure: '7 site', what: `${what}: upstream bytes per site`, unit: 'x image', better: 'lower', berth: summarize(r.siteX), peer: { name: '3 berths without peers', value: summarize(r.plainX) }, target: { on: 'berth', op: '<=', value: 1.05 } });
      ctx.add({ measure: '7 site', what: `${what}: time until every node has it`, unit: 's', better: 'lower', berth: siteS, peer: { name: 'one berth alone, cold, no peers', value: summarize(r.oneS) }, target: { on: 'ratio', op: '<=', value: 1.2 } });
      ctx.add({ measure: '7 site', what: `${what}: time until every node has it`, unit: 's', better: 'lower', berth: siteS, peer: { name: '3 berths without peers', value: summarize(r.plainS) } });
    },
  };
}
