/**
 * 5. A full `ctr images pull` (resolve, fetch every layer, unpack) of a
 * multi-layer image through each mirror, cold (mirror and containerd empty)
 * and warm (mirror filled, containerd empty). Unpacking is the same work on
 * both sides and is part of what a user waits for, so it is in the time.
 *
 * Cold twice: with a fresh process (berth and the proxy restarted with an
 * empty cache before each pull, so the pull is also a new process's first
 * work: V8's JIT, llhttp's compile, the first token), and with a running
 * daemon (each mirror warmed once by a cold pull of an unrelated image, then
 * each timed pull is of an image of its own that no mirror holds yet: same
 * shape as the app image, other seeds, a repository of its own, made and
 * pushed by the bench before the timed part). The second is a node's common
 * case: berth runs for days and meets new images.
 */
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { startContainerd, writeHostsToml } from '../../test/harness/containerd.js';
import { makeImage } from '../../test/harness/images.js';
import { CpuMeter } from '../cpu.js';
import { NS, TAG } from '../env.js';
import { now, summarize } from '../stats.js';
import type { Ctx, Measure } from './context.js';
import type { Scope } from '../scope.js';

export function ctrPull(scope: Scope): Measure {
  return {
    id: 5,
    name: 'ctr images pull through each mirror',
    async run(ctx: Ctx) {
      const { env, plan } = ctx;
      const img = env.images.app;
      const ref = `${NS}/${img.repo}:${TAG}`;
      const ctd = await startContainerd(scope.child(), { namespace: 'berth-bench' });
      const hosts = { berth: path.join(env.work, 'hosts-berth'), proxy: path.join(env.work, 'hosts-proxy') };
      await writeHostsToml(hosts.berth, NS, env.berth.url);
      await writeHostsToml(hosts.proxy, NS, env.proxy.url);
      /** Mirrors' CPU-seconds per pull (their /proc time around it). */
      const cpu = { berth: { cold: [] as number[], running: [] as number[] }, proxy: { cold: [] as number[], running: [] as number[] } };
      const pull = async (mirror: 'berth' | 'proxy', cpuInto?: number[], what = ref): Promise<number> => {
        await ctd.forget();
        const meter = cpuInto ? new CpuMeter([env.pid(mirror)]) : null;
        const t0 = now();
        const res = await ctd.pull(what, { hostsDir: hosts[mirror], timeoutMs: 300_000 });
        const ms = now() - t0;
        if (meter) cpuInto!.push(meter.stop());
        if (res.code !== 0) throw new Error(`ctr pull of ${what} through ${mirror} exited ${res.code}: ${res.stderr.slice(-1000)}`);
        return ms / 1000;
      };
      const t = { berth: { cold: [] as number[], warm: [] as number[], running: [] as number[] }, proxy: { cold: [] as number[], warm: [] as number[], running: [] as number[] } };
      for (let i = 0; i < plan.runs; i++) {
        await env.berth.wipe();
        t.berth.cold.push(await pull('berth', cpu.berth.cold));
        t.berth.warm.push(await pull('berth'));
        await env.wipeProxy();
        t.proxy.cold.push(await pull('proxy', cpu.proxy.cold));
        t.proxy.warm.push(await pull('proxy'));
        ctx.log(`  run ${i + 1}: cold berth ${t.berth.cold.at(-1)!.toFixed(2)} s, proxy ${t.proxy.cold.at(-1)!.toFixed(2)} s; warm berth ${t.berth.warm.at(-1)!.toFixed(2)} s, proxy ${t.proxy.warm.at(-1)!.toFixed(2)} s`);
      }

      // Cold, running daemon: images no mirror has seen, one per run, and one to warm them with.
      const fresh = Array.from({ length: plan.runs + 1 }, (_, i) => (i === 0 ? 'app-warmup' : `app-run-${i}`));
      ctx.log(`  making and pushing ${fresh.length} more images like ${img.repo} (other seeds) for the cold pulls of a running daemon`);
      for (const name of fresh) {
        const dir = path.join(env.work, name);
        await makeImage(dir, { layers: plan.pullLayers, layerSize: plan.pullLayerSize, seed: `bench-${name}`, tag: TAG });
        await env.push(dir, `library/${name}`);
        await rm(dir, { recursive: true, force: true });
      }
      const refOf = (name: string): string => `${NS}/library/${name}:${TAG}`;
      // Both mirrors are running since the last run above; one cold pull of an unrelated image each warms them.
      await pull('berth', undefined, refOf(fresh[0]!));
      await pull('proxy', undefined, refOf(fresh[0]!));
      for (let i = 1; i < fresh.length; i++) {
        // Alternate which mirror goes first, so neither always follows the other.
        const order: Array<'berth' | 'proxy'> = i % 2 === 1 ? ['berth', 'proxy'] : ['proxy', 'berth'];
        for (const m of order) t[m].running.push(await pull(m, cpu[m].running, refOf(fresh[i]!)));
        ctx.log(`  run ${i}, cold through a running daemon: berth ${t.berth.running.at(-1)!.toFixed(2)} s (${cpu.berth.running.at(-1)!.toFixed(2)} CPU-s), proxy ${t.proxy.running.at(-1)!.toFixed(2)} s (${cpu.proxy.running.at(-1)!.toFixed(2)} CPU-s)`);
      }
      await ctd.forget();
      await ctd.stop();
      const layers = img.image.manifests[0]?.layers.length ?? 0;
      const mib = img.image.blobs.reduce((s, b) => s + b.size, 0) / 2 ** 20;
      const what = `${layers} layers, ${mib.toFixed(0)} MiB, with unpack`;
      const target = { on: 'ratio', op: '<=', value: 1.0 } as const;
      ctx.add({ measure: '5 ctr pull', what: `cold, ${what}`, unit: 's', better: 'lower', berth: summarize(t.berth.cold), peer: { name: 'Distribution proxy', value: summarize(t.proxy.cold) }, target });
      const running = `cold, running daemon (warmed by another image's cold pull; a new image each run), ${what}`;
      ctx.add({ measure: '5 ctr pull', what: running, unit: 's', better: 'lower', berth: summarize(t.berth.running), peer: { name: 'Distribution proxy', value: summarize(t.proxy.running) }, target });
      ctx.add({ measure: '5 ctr pull', what: `warm, ${what}`, unit: 's', better: 'lower', berth: summarize(t.berth.warm), peer: { name: 'Distribution proxy', value: summarize(t.proxy.warm) }, target });
      const c = { measure: '5 ctr pull', unit: 'CPU-s', better: 'lower' } as const;
      ctx.add({ ...c, what: `cold, ${what}: the mirror's CPU per pull`, berth: summarize(cpu.berth.cold), peer: { name: 'Distribution proxy', value: summarize(cpu.proxy.cold) } });
      ctx.add({ ...c, what: `${running}: the mirror's CPU per pull`, berth: summarize(cpu.berth.running), peer: { name: 'Distribution proxy', value: summarize(cpu.proxy.running) } });
      ctx.note(
        'ctr pull (5): "cold" restarts berth and the proxy with an empty cache before each pull, so each cold pull is a fresh process\'s first work (V8\'s JIT, undici\'s llhttp compile, the first token); "cold, running daemon" starts neither again: after the cold rows\' last run each mirror is warmed by one cold pull of an unrelated image (app-warmup), then each run pulls an image no mirror holds yet (app-run-N: the app image\'s shape, other seeds, a repository of its own, pushed before the timed part), through both mirrors, the first mirror alternating. CPU per pull: the mirror\'s /proc time (process and descendants) around the pull; a fresh berth\'s start-up before /readyz is not in it.',
      );
    },
  };
}
