/**
 * berth as the bench runs it: the built daemon (`dist/cli/main.js serve`) as
 * a child process on a port chosen at run time. Not the harness's startBerth,
 * for three reasons: that one finds dist/ relative to its own file, which is
 * dist-bench/ once compiled here; start-up is timed from spawn to the first
 * `/readyz` 200 with 10 ms polls (the harness polls every 50 ms and waits
 * for a log line first); and the cache is wiped between cold runs.
 */
import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'smol-toml';
import { freePort, httpStatus, spawnService, tempDirFor, type Service, type Teardown } from '../test/harness/procs.js';

/** The checkout: this file runs from dist-bench/bench/. */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BERTH_MAIN = path.join(REPO_ROOT, 'dist', 'cli', 'main.js');

export interface BenchBerthOptions {
  upstreams: Array<{ registry: string; url: string; username?: string; password_file?: string }>;
  cacheDir?: string;
  tagTtl?: string;
  logLevel?: string;
  /** Extra node flags for the daemon, e.g. ['--cpu-prof', '--cpu-prof-dir=…']. */
  nodeFlags?: string[];
  /** Another build's cli/main.js (a branch, a patched copy) instead of this checkout's dist/. */
  main?: string;
  /** More environment for the daemon: the systemd unit's `Environment=` (bench/unit.ts). */
  env?: Record<string, string>;
  /** More config sections, as they go into berth.toml (e.g. `{ peers: {…} }`). */
  extra?: Record<string, unknown>;
}

export interface BenchBerth {
  url: string;
  port: number;
  cacheDir: string;
  readonly pid: number;
  readonly service: Service;
  /** Spawns the daemon; resolves with ms from spawn to the first /readyz 200. */
  start(): Promise<number>;
  /** SIGTERM (berth drains and exits 0; a --cpu-prof profile is written then). */
  stop(): Promise<void>;
  /** Stops, empties the cache directory, starts again: the next request is cold. */
  wipe(): Promise<number>;
  /** Stops and starts again on the same cache: a fresh process (memory counted from zero). */
  restart(): Promise<number>;
}

export async function waitReady(url: string, svc: Service, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (svc.hasExited()) throw new Error(`berth exited before it was ready:\n${svc.output().slice(-3000)}`);
    const status = await httpStatus(`${url}/readyz`, true, 1000).catch(() => 0);
    if (status === 200) return;
    if (Date.now() > deadline) throw new Error(`berth not ready after ${timeoutMs} ms:\n${svc.output().slice(-3000)}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export async function startBenchBerth(t: Teardown, opts: BenchBerthOptions): Promise<BenchBerth> {
  const dir = await tempDirFor(t, 'berth-bench');
  const cacheDir = opts.cacheDir ?? path.join(dir, 'cache');
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const config = {
    server: { listen: `127.0.0.1:${port}`, drain_timeout: '5s' },
    cache: { dir: cacheDir, tag_ttl: opts.tagTtl ?? '5m', serve_stale: true },
    log: { level: opts.logLevel ?? 'info' },
    upstream: opts.upstreams.map((u) => ({ connect_timeout: '5s', header_timeout: '30s', body_timeout: '30s', ...u })),
    ...opts.extra,
  };
  const configFile = path.join(dir, 'berth.toml');
  await writeFile(configFile, stringify(config));
  // berth refuses unknown BERTH_* variables: keep the caller's out.
  const env: NodeJS.ProcessEnv = { ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('BERTH_'))), ...opts.env };

  let service: Service | null = null;
  const start = async (): Promise<number> => {
    const t0 = process.hrtime.bigint();
    const svc = spawnService('berth', process.execPath, [...(opts.nodeFlags ?? []), opts.main ?? BERTH_MAIN, 'serve', '--config', configFile], { env });
    service = svc;
    await waitReady(url, svc);
    return Number(process.hrtime.bigint() - t0) / 1e6;
  };
  const stop = async (): Promise<void> => {
    await service?.stop('SIGTERM', 15_000);
  };
  t.teardown(stop);
  await start();

  return {
    url,
    port,
    cacheDir,
    get pid() {
      if (!service) throw new Error('berth not started');
      return service.pid;
    },
    get service() {
      if (!service) throw new Error('berth not started');
      return service;
    },
    start,
    stop,
    async restart() {
      await stop();
      return start();
    },
    async wipe() {
      await stop();
      await rm(cacheDir, { recursive: true, force: true });
      return start();
    },
  };
}
