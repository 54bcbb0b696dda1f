/**
 * Starts the real berth daemon (the built CLI, `node dist/cli/main.js serve`)
 * as a child process with a config file written for the test, on a port
 * chosen at run time. Tests talk to it over HTTP like containerd does.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'smol-toml';
import { freePort, spawnService, tempDirFor, waitForHttp, type Service, type Teardown } from './procs.js';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BERTH_BIN = path.join(REPO_ROOT, 'dist', 'cli', 'main.js');

export interface BerthUpstream {
  registry: string;
  url: string;
  username?: string;
  password_file?: string;
  connect_timeout?: string;
  header_timeout?: string;
  body_timeout?: string;
  ca_file?: string;
  skip_verify?: boolean;
  via_harbor_project?: string;
}

export interface BerthOptions {
  upstreams: BerthUpstream[];
  cacheDir?: string;
  tagTtl?: string;
  serveStale?: boolean;
  maxSize?: string;
  logLevel?: string;
  /** Serve HTTPS with this certificate. */
  tls?: { certFile: string; keyFile: string };
  /** Extra top-level TOML tables merged into the config. */
  extra?: Record<string, unknown>;
  env?: NodeJS.ProcessEnv;
}

export interface Berth {
  url: string;
  port: number;
  host: string;
  cacheDir: string;
  configFile: string;
  service: Service;
  /** Parsed JSON log lines so far. */
  logs(): Array<Record<string, unknown>>;
  stop(): Promise<void>;
  kill9(): Promise<void>;
  /** Starts again on the same port, config and cache. */
  restart(): Promise<void>;
  /** Runs another berth command against the same config. */
  cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }>;
}

export async function startBerth(t: Teardown, opts: BerthOptions): Promise<Berth> {
  const dir = await tempDirFor(t, 'berth-e2e');
  const cacheDir = opts.cacheDir ?? path.join(dir, 'cache');
  const port = await freePort();
  const config: Record<string, unknown> = {
    server: { listen: `127.0.0.1:${port}`, drain_timeout: '5s', ...(opts.tls ? { tls_cert_file: opts.tls.certFile, tls_key_file: opts.tls.keyFile } : {}) },
    cache: { dir: cacheDir, tag_ttl: opts.tagTtl ?? '5m', serve_stale: opts.serveStale ?? true, ...(opts.maxSize ? { max_size: opts.maxSize } : {}) },
    log: { level: opts.logLevel ?? 'info' },
    upstream: opts.upstreams.map((u) => ({ connect_timeout: '2s', header_timeout: '10s', body_timeout: '10s', ...u })),
    ...opts.extra,
  };
  const configFile = path.join(dir, 'berth.toml');
  await writeFile(configFile, stringify(config));
  // berth reads BERTH_* as config (and warns on unknown ones); the test runner's own (BERTH_TEST_KEEP_TMP…) must not leak in.
  const env: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('BERTH_')));
  Object.assign(env, opts.env);

  let service: Service;
  const url = `${opts.tls ? 'https' : 'http'}://127.0.0.1:${port}`;
  const launch = async () => {
    service = spawnService('berth', process.execPath, [BERTH_BIN, 'serve', '--config', configFile], { env });
    await service.waitForOutput(/"msg":"berth is serving"/, 20_000);
    await waitForHttp(`${url}/readyz`, { timeoutMs: 10_000, ok: (s) => s === 200 });
  };
  await launch();
  t.teardown(() => service.stop('SIGTERM', 10_000));

  return {
    url,
    port,
    host: `127.0.0.1:${port}`,
    cacheDir,
    configFile,
    get service() {
      return service;
    },
    logs() {
      return service
        .output()
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => {
          try {
            return JSON.parse(l) as Record<string, unknown>;
          } catch {
            return {};
          }
        });
    },
    stop: () => service.stop('SIGTERM', 10_000),
    kill9: () => service.kill9(),
    restart: launch,
    async cli(args) {
      const { execFile } = await import('node:child_process');
      return new Promise((resolve) => {
        execFile(process.execPath, [BERTH_BIN, ...args, '--config', configFile], { env, timeout: 60_000 }, (err, stdout, stderr) => {
          const code = err ? ((err as { code?: unknown }).code as number | null) ?? 1 : 0;
          resolve({ code: typeof code === 'number' ? code : 1, stdout, stderr });
        });
      });
    },
  } as Berth;
}
