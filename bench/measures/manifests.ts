/**
 * 4. Manifest requests per second with wrk (32 connections): by tag, within
 * berth's tag_ttl (the Distribution proxy asks its upstream about every tag
 * request), and by digest (both answer from their own store). Also berth's
 * peak RSS during the load (its idle RSS after it is `idleAfterLoad`).
 */
import { MT } from '../../test/harness/images.js';
import { PeakRss, heapBreakdown, idle, memStatus } from '../rss.js';
import { summarize } from '../stats.js';
import { wrk, type WrkResult } from '../wrk.js';
import type { Ctx, Measure } from './context.js';

// What containerd sends when it resolves a tag.
const ACCEPT = [MT.ociIndex, MT.ociManifest, MT.dockerList, MT.dockerManifest, '*/*'].join(', ');

export const manifests: Measure = {
  id: 4,
  name: 'manifest requests per second',
  async run(ctx: Ctx) {
    const { env, plan } = ctx;
    const img = env.images.app;
    const refs = { tag: 'v1', digest: img.image.manifestDigest };
    const headers = { Accept: ACCEPT };
    // A fresh process, so its peak and idle RSS are this measure's, not what earlier measures left.
    await env.berth.restart();
    // Warm both: the tag resolved and the manifest stored.
    for (const server of ['berth', 'proxy'] as const) {
      for (const ref of Object.values(refs)) {
        const res = await fetch(env.manifestUrl(server, img.repo, ref), { headers });
        await res.arrayBuffer();
        if (res.status !== 200) throw new Error(`${server} manifest ${ref}: status ${res.status}`);
      }
    }
    const checked = (r: WrkResult, what: string): number => {
      if (r.non2xx > 0 || r.socketErrors > 0) throw new Error(`${what}: ${r.non2xx} non-2xx answers, ${r.socketErrors} socket errors of ${r.requests}`);
      return r.rps;
    };
    const rps = { berth: { tag: [] as number[], digest: [] as number[] }, proxy: { tag: [] as number[], digest: [] as number[] } };
    const peaks: number[] = [];
    for (let i = 0; i < plan.runs; i++) {
      const peak = new PeakRss(env.berth.pid);
      for (const kind of ['tag', 'digest'] as const) {
        for (const server of ['berth', 'proxy'] as const) {
          const url = env.manifestUrl(server, img.repo, refs[kind]);
          rps[server][kind].push(checked(await wrk(url, { connections: 32, seconds: plan.wrkSeconds, headers }), `${server} by ${kind}`));
        }
      }
      peaks.push(peak.stop());
      ctx.log(`  run ${i + 1}: by tag berth ${rps.berth.tag.at(-1)!.toFixed(0)}, proxy ${rps.proxy.tag.at(-1)!.toFixed(0)} req/s; by digest berth ${rps.berth.digest.at(-1)!.toFixed(0)}, proxy ${rps.proxy.digest.at(-1)!.toFixed(0)} req/s; berth peak RSS ${peaks.at(-1)!.toFixed(0)} MiB`);
    }
    ctx.loadEndedAt = Date.now();
    ctx.add({ measure: '4 manifests', what: 'by tag, within tag_ttl, 32 connections', unit: 'req/s', better: 'higher', berth: summarize(rps.berth.tag), peer: { name: 'Distribution proxy', value: summarize(rps.proxy.tag) }, target: { on: 'ratio', op: '>=', value: 10 } });
    ctx.add({ measure: '4 manifests', what: 'by digest, 32 connections', unit: 'req/s', better: 'higher', berth: summarize(rps.berth.digest), peer: { name: 'Distribution proxy', value: summarize(rps.proxy.digest) }, target: { on: 'ratio', op: '>=', value: 2 } });
    ctx.add({ measure: '6 memory', what: 'peak RSS during 4', unit: 'MiB', better: 'lower', berth: summarize(peaks), target: { on: 'berth', op: '<=', value: 128 } });
  },
};

/** V8 gives back what a burst of requests left only after its memory reducer runs (~45 s here). */
const IDLE_AFTER_MS = 60_000;

/**
 * Idle RSS of the berth that served measure 4, a minute after the load
 * (measure 6's start-ups, on other processes, run in between), with where
 * its memory sits according to its own /metrics.
 */
export const idleAfterLoad: Measure = {
  id: 4,
  name: 'idle RSS a minute after the manifest load',
  async run(ctx: Ctx) {
    const { env } = ctx;
    if (ctx.loadEndedAt === undefined) throw new Error('measure 4 did not run');
    const wait = ctx.loadEndedAt + IDLE_AFTER_MS - Date.now();
    if (wait > 0) await idle(wait);
    const rss: number[] = [];
    for (let i = 0; i < 3; i++) {
      if (i > 0) await idle(1000);
      rss.push(memStatus(env.berth.pid).rssMiB);
    }
    ctx.note(`berth idle a minute after measure 4: ${await heapBreakdown(env.berth.url)}.`);
    // Issue 13 bounds the idle RSS of a fresh start (measure 6) and the peaks, not this one: shown for the trend.
    ctx.add({ measure: '6 memory', what: 'idle RSS, 60 s after the load of 4', unit: 'MiB', better: 'lower', berth: summarize(rss) });
  },
};
