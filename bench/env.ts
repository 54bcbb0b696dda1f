/**
 * The peers of one bench run, all on 127.0.0.1 with ports chosen at run time:
 * a token server (docker.io's Bearer flow), the upstream Distribution behind
 * it, a Distribution in proxy mode in front of it, nginx and a plain Node
 * server over the upstream's blob files, and berth. Both mirrors reach the upstream with the same user
 * through the same token flow, and both answer their own clients
 * anonymously: the same auth on every path, so no side pays for JWTs the
 * other does not.
 */
import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { makeImage, pushImage, type TestImage } from '../test/harness/images.js';
import { tempDirFor } from '../test/harness/procs.js';
import { startRegistry, type Registry } from '../test/harness/registry.js';
import { startTokenServer, type TokenServer } from '../test/harness/token-server.js';
import { startBenchBerth, type BenchBerth, type BenchBerthOptions } from './berth.js';
import { makeStreamedImage } from './images.js';
import { startNginx, type Nginx } from './nginx.js';
import { startPlainNode, type PlainNode } from './plain-node.js';
import type { Scope } from './scope.js';
import { MiB } from './stats.js';

export interface Plan {
  quick: boolean;
  /** Runs per measure (each measure reports their median, min and max). */
  runs: number;
  bigBlob: number;
  coalBlob: number;
  coalClients: number;
  pullLayers: number;
  pullLayerSize: number;
  wrkSeconds: number;
  startupBlobs: number;
  /** Measure 7: the image every node of a site pulls at once. */
  siteLayers: number;
  siteLayerSize: number;
}

/** Stops a Distribution, empties its storage and starts it again on the same port: a cold proxy. */
export async function wipeRegistry(r: Registry): Promise<void> {
  await r.stop();
  await rm(r.dataDir, { recursive: true, force: true });
  await mkdir(r.dataDir, { recursive: true });
  await r.start();
}

export function plan(quick: boolean): Plan {
  return quick
    ? { quick, runs: 3, bigBlob: 128 * MiB, coalBlob: 32 * MiB, coalClients: 50, pullLayers: 4, pullLayerSize: 4 * MiB, wrkSeconds: 2, startupBlobs: 100_000, siteLayers: 6, siteLayerSize: 16 * MiB }
    : { quick, runs: 5, bigBlob: 512 * MiB, coalBlob: 64 * MiB, coalClients: 50, pullLayers: 6, pullLayerSize: 24 * MiB, wrkSeconds: 5, startupBlobs: 100_000, siteLayers: 6, siteLayerSize: 24 * MiB };
}

export const NS = 'docker.io';
export const TAG = 'v1';
/** The upstream user both mirrors pull as. */
export const EDGE = { user: 'edge', pass: 'edge-secret' };
const PUSHER = 'pusher:push-secret';

export interface BenchImage {
  image: TestImage;
  repo: string;
  /** The first layer: what the blob measures fetch. */
  layer: { digest: string; size: number };
}

export type Server = 'berth' | 'proxy' | 'nginx' | 'node' | 'upstream';

/** How every berth of a run is started: node flags, another build, the unit's environment. */
export interface BerthRunOpts {
  nodeFlags: string[];
  main?: string;
  env?: Record<string, string>;
}

export interface BenchEnv {
  work: string;
  token: TokenServer;
  upstream: Registry;
  proxy: Registry;
  nginx: Nginx;
  /** node:http piping createReadStream (1 MiB chunks): Node's own ceiling. */
  plainNode: PlainNode;
  berth: BenchBerth;
  images: { big: BenchImage; coal: BenchImage; app: BenchImage };
  /** Blob URL on a server (berth gets `?ns=`, as containerd sends it). */
  blobUrl(server: Server, img: BenchImage): string;
  manifestUrl(server: 'berth' | 'proxy', repo: string, ref: string): string;
  /** The server's current process (for its CPU time; the proxy's and berth's change when wiped). */
  pid(server: Server): number;
  /** Headers a client needs for `server` (a Bearer token for the upstream itself). */
  headers(server: Server, repo: string): Record<string, string>;
  /** Stops the proxy, empties its storage, starts it again. */
  wipeProxy(): Promise<void>;
  /** How berth is run (node flags, another build): the same for every berth a measure starts. */
  berthOpts: BerthRunOpts;
  /** The [[upstream]] berth is given (the upstream as the mirrors' user), for more berths. */
  berthUpstreams: BenchBerthOptions['upstreams'];
  /** Pushes the OCI layout's `TAG` to the upstream as `repo:TAG`. */
  push(layoutDir: string, repo: string): Promise<void>;
}

function firstLayer(image: TestImage, repo: string): BenchImage {
  const digest = image.manifests[0]?.layers[0];
  const blob = image.blobs.find((b) => b.digest === digest);
  if (!blob) throw new Error(`image ${repo} has no layer`);
  return { image, repo, layer: { digest: blob.digest, size: blob.size } };
}

export async function startEnv(scope: Scope, p: Plan, log: (s: string) => void, berthOpts: BerthRunOpts): Promise<BenchEnv> {
  const work = await tempDirFor(scope, 'berth-bench');
  const token = await startTokenServer(scope, { users: { pusher: 'push-secret', [EDGE.user]: EDGE.pass }, anonymousPull: false, expiresIn: 3600 });
  const upstream = await startRegistry(scope, { token });
  log(`upstream Distribution ${upstream.url} (token auth)`);

  log(`making images: ${p.bigBlob / MiB} MiB layer, ${p.coalBlob / MiB} MiB layer, ${p.pullLayers} x ${p.pullLayerSize / MiB} MiB layers`);
  const big = await makeStreamedImage(path.join(work, 'big'), { layerSize: p.bigBlob, seed: 'bench-big', tag: TAG });
  const coal = await makeStreamedImage(path.join(work, 'coal'), { layerSize: p.coalBlob, seed: 'bench-coal', tag: TAG });
  const app = await makeImage(path.join(work, 'app'), { layers: p.pullLayers, layerSize: p.pullLayerSize, seed: 'bench-app', tag: TAG });
  const images = {
    big: firstLayer(big, 'library/big'),
    coal: firstLayer(coal, 'library/coal'),
    app: firstLayer(app, 'library/app'),
  };
  for (const img of Object.values(images)) {
    await pushImage(img.image.layoutDir, TAG, upstream, `${img.repo}:${TAG}`, { creds: PUSHER, timeoutMs: 600_000 });
  }
  // The layouts were only needed for the push: give the disk back now.
  await rm(path.join(work, 'big'), { recursive: true, force: true });
  await rm(path.join(work, 'coal'), { recursive: true, force: true });
  log('images pushed to the upstream');

  const proxy = await startRegistry(scope, { proxy: { remoteurl: upstream.url, username: EDGE.user, password: EDGE.pass } });
  log(`Distribution proxy ${proxy.url}`);
  const nginx = await startNginx(scope, upstream.dataDir);
  log(`nginx ${nginx.url}`);
  const plainNode = await startPlainNode(scope, upstream.dataDir);
  log(`plain Node server ${plainNode.url}`);
  const pwFile = path.join(work, 'edge.password');
  await writeFile(pwFile, `${EDGE.pass}\n`);
  const berthUpstreams = [{ registry: NS, url: upstream.url, username: EDGE.user, password_file: pwFile }];
  const berth = await startBenchBerth(scope, {
    upstreams: berthUpstreams,
    ...berthOpts,
  });
  log(`berth ${berth.url} (pid ${berth.pid})`);

  const base = (server: Server): string =>
    server === 'berth' ? berth.url : server === 'proxy' ? proxy.url : server === 'nginx' ? nginx.url : server === 'node' ? plainNode.url : upstream.url;
  const bearers = new Map<string, string>();
  return {
    work,
    token,
    upstream,
    proxy,
    nginx,
    plainNode,
    berth,
    images,
    blobUrl: (server, img) => `${base(server)}/v2/${img.repo}/blobs/${img.layer.digest}${server === 'berth' ? `?ns=${NS}` : ''}`,
    manifestUrl: (server, repo, ref) => `${base(server)}/v2/${repo}/manifests/${ref}${server === 'berth' ? `?ns=${NS}` : ''}`,
    pid: (server) =>
      server === 'berth' ? berth.pid : server === 'proxy' ? proxy.service.pid : server === 'nginx' ? nginx.service.pid : server === 'node' ? plainNode.service.pid : upstream.service.pid,
    headers(server, repo): Record<string, string> {
      if (server !== 'upstream') return {};
      let b = bearers.get(repo);
      if (!b) {
        b = token.issue(EDGE.user, [{ type: 'repository', name: repo, actions: ['pull'] }], 3600);
        bearers.set(repo, b);
      }
      return { authorization: `Bearer ${b}` };
    },
    async wipeProxy() {
      await wipeRegistry(proxy);
    },
    berthOpts,
    berthUpstreams,
    async push(layoutDir, repo) {
      await pushImage(layoutDir, TAG, upstream, `${repo}:${TAG}`, { creds: PUSHER, timeoutMs: 600_000 });
    },
  };
}
