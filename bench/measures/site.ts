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
 *
 * All six reach the upstream through one "uplink" (bench/uplink.ts), as a
 * site's nodes share one WAN link: paced to 25 MiB/s for the whole site,
 * where the time target applies (one node's cold pull is then the link's
 * time, and the site should take little more), and unpaced ("loopback",
 * shown without a target: there is no link to save, the 2 shared cores are
 * the limit).
 */
import { randomBytes } from 'node:crypto';
import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { MT } from '../../test/harness/images.js';
import { freePort, tempDirFor } from '../../test/harness/procs.js';
import { startBenchBerth, type BenchBerth } from '../berth.js';
import { startUplink } from '../uplink.js';
import { makeStreamedImage } from '../images.js';
import { NS, TAG } from '../env.js';
import type { Scope } from '../scope.js';
import { MiB, now, summarize } from '../stats.js';
import type { Ctx, Measure } from './context.js';

const NODES = 3;
const REPO = 'library/site';
/** The thin uplink: 25 MiB/s (about 210 Mbit/s) for the whole site. */
const UPLINK = 25 * MiB;
const LINKS = [
  { name: `${UPLINK / MiB} MiB/s uplink`, rate: UPLINK },
  { name: 'loopback', rate: null },
] as const;

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
      const uplink = await startUplink(s, env.upstream.url);
      const upstreams = env.berthUpstreams.map((u) => ({ ...u, url: uplink.url }));
      const start = (peers: Record<string, unknown> | null): Promise<BenchBerth> =>
        startBenchBerth(s, { upstreams, ...env.berthOpts, ...(peers ? { extra: { peers } } : {}) });
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

      const bytesX: number[] = [];
      const plainX: number[] = [];
      const r = LINKS.map(() => ({ oneS: [] as number[], plainS: [] as number[], siteS: [] as number[] }));
      for (let i = 0; i < plan.runs; i++) {
        for (const [l, link] of LINKS.entries()) {
          uplink.setRate(link.rate);
          const t = r[l]!;
          let mark = env.upstream.mark();
          t.oneS.push(await pullAt([plain[0]!]));
          await upstreamSince(mark);

          mark = env.upstream.mark();
          t.plainS.push(await pullAt(plain));
          const p = await upstreamSince(mark);
          plainX.push(p.bytes / imageBytes);

          mark = env.upstream.mark();
          t.siteS.push(await pullAt(peered));
          const q = await upstreamSince(mark);
          bytesX.push(q.bytes / imageBytes);
          ctx.log(
            `  run ${i + 1}, ${link.name}: one node alone ${t.oneS.at(-1)!.toFixed(2)} s; 3 without peers ${t.plainS.at(-1)!.toFixed(2)} s, ${p.blobGets} blob GETs, ${plainX.at(-1)!.toFixed(2)}x the image; ` +
              `3 with peers ${t.siteS.at(-1)!.toFixed(2)} s, ${q.blobGets} blob GETs, ${bytesX.at(-1)!.toFixed(2)}x the image`,
          );
        }
      }
      await s.close();

      ctx.note(
        `Site (7): six more berths on this machine, three with [peers] (static members on 127.0.0.1-3, one site key) and three without; all reach the upstream through one TCP proxy, unpaced ("loopback") or pacing the upstream's bytes to ${UPLINK / MiB} MiB/s for all connections together (a thin uplink). A node's pull: the manifest by tag, then every blob at once (no unpack). Upstream bytes: the upstream's access log, 2xx GETs for the image.`,
      );
      const what = `${NODES} nodes pull one image at once (${manifest.layers.length} layers, ${(imageBytes / MiB).toFixed(0)} MiB)`;
      ctx.add({ measure: '7 site', what: `${what}: upstream bytes per site`, unit: 'x image', better: 'lower', berth: summarize(bytesX), peer: { name: '3 berths without peers', value: summarize(plainX) }, target: { on: 'berth', op: '<=', value: 1.05 } });
      for (const [l, link] of LINKS.entries()) {
        const t = r[l]!;
        const siteS = summarize(t.siteS);
        const on = `${what}, ${link.name}: time until every node has it`;
        const target = link.rate === null ? {} : { target: { on: 'ratio', op: '<=', value: 1.2 } as const };
        ctx.add({ measure: '7 site', what: on, unit: 's', better: 'lower', berth: siteS, peer: { name: 'one berth alone, cold, no peers', value: summarize(t.oneS) }, ...target });
        ctx.add({ measure: '7 site', what: on, unit: 's', better: 'lower', berth: siteS, peer: { name: '3 berths without peers', value: summarize(t.plainS) } });
      }
    },
  };
}
