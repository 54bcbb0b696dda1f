/**
 * A real CNCF Distribution (docker-registry 2.8) on loopback, as the upstream
 * berth mirrors.
 *
 * Request recording: Distribution writes one Apache "combined" access-log line
 * per request (the outermost handler, so 401 challenges, 404s and HEADs are all
 * there), e.g. `127.0.0.1 - - [25/Nov/2026:14:21:09 +0000] "GET /v2/ HTTP/1.1" 200 2 "" "curl/7.88.1"`.
 * Those lines are parsed into `requests()`. The line is written when the
 * registry's handler returns, and it reaches us through a pipe while the
 * response reaches the client through a socket, so a client can hold the full
 * response before the line has been parsed here (and a large blob's line only
 * appears after its last byte was written). Measured here: small responses'
 * lines were always in before the client had the body; 3 of 30 GETs of a
 * 20 MB blob finished on the client up to ~5 ms before their line arrived.
 * So never assert on `requests()` right after a response: use
 * `waitForRequests(pred)`, which re-checks `pred` on every new line, then
 * count. To assert that something did NOT happen (e.g. a cached pull made no
 * blob GET), call `barrier()` first: it sends its own request and waits for
 * its line, which comes after the lines of everything finished before it.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { cleanup, freePort, httpStatus, makeTempDir, spawnService, waitForHttp, type Service, type Teardown } from './procs.js';
import type { TokenServer } from './token-server.js';

export interface RegistryRequest {
  method: string;
  /** Request path without the query string, e.g. `/v2/library/app/blobs/sha256:…`. */
  path: string;
  /** Path with the query string as sent (containerd adds `?ns=docker.io`). */
  uri: string;
  status: number;
  /** Body bytes written (0 for HEAD). */
  bytes: number;
  /** Date.now() when the line was parsed. */
  at: number;
  /** Index in the whole record (stable across restarts). */
  seq: number;
}

export interface RequestFilter {
  method?: string;
  /** Tested against `path` (no query string). */
  pathRe?: RegExp;
  status?: number;
  /** Only requests with `seq >= since` (see `mark()`). */
  since?: number;
}

export interface RegistryOptions {
  token?: Pick<TokenServer, 'realm' | 'service' | 'issuer' | 'certFile'>;
  dataDir?: string;
  port?: number;
  tls?: { certFile: string; keyFile: string };
  /** Run as Distribution's pull-through proxy of `remoteurl` (start that upstream first: it panics otherwise). */
  proxy?: { remoteurl: string; username?: string; password?: string };
  /** Milliseconds to wait for `GET /v2/` (default 30 s). */
  readyTimeoutMs?: number;
}

export interface Registry {
  /** `http://127.0.0.1:PORT` (https with `tls`). */
  url: string;
  /** `127.0.0.1:PORT` */
  host: string;
  port: number;
  dataDir: string;
  configFile: string;
  stop(): Promise<void>;
  /** (Re)starts on the same port, data and config; resolves once `GET /v2/` answers. */
  start(): Promise<void>;
  requests(filter?: RequestFilter): RegistryRequest[];
  /** Resolves once `pred(all requests so far)` is true; re-checked on every new request line. */
  waitForRequests(pred: (reqs: RegistryRequest[]) => boolean, timeoutMs?: number): Promise<void>;
  /** The `seq` the next request will get; pass as `since` to count only what follows. */
  mark(): number;
  /**
   * Sends `GET /v2/?berth-barrier=ID` and waits until its access line is parsed, so every
   * request that completed before is recorded. Barrier requests are not in `requests()`.
   */
  barrier(timeoutMs?: number): Promise<void>;
  /** The current process (replaced by `start()`). */
  readonly service: Service;
}

// 127.0.0.1 - - [25/Nov/2026:14:21:09 +0000] "GET /v2/ HTTP/1.1" 200 2 "" "curl/7.88.1"
const ACCESS_LINE = /^\S+ \S+ \S+ \[[^\]]+\] "([A-Z]+) (\S+) [^"]*" (\d{3}) (\d+|-)/;

const q = (s: string): string => JSON.stringify(s);

export function registryConfigYaml(o: {
  addr: string;
  dataDir: string;
  secret: string;
  token?: RegistryOptions['token'];
  tls?: RegistryOptions['tls'];
  proxy?: RegistryOptions['proxy'];
}): string {
  const lines = [
    'version: 0.1',
    'log:',
    '  level: info',
    '  formatter: json',
    '  accesslog:',
    '    disabled: false',
    '  fields:',
    '    service: registry',
    'storage:',
    '  filesystem:',
    `    rootdirectory: ${q(o.dataDir)}`,
    '  delete:',
    '    enabled: true',
    '  maintenance:',
    '    uploadpurging:',
    '      enabled: false',
    'http:',
    `  addr: ${q(o.addr)}`,
    `  secret: ${q(o.secret)}`,
    '  headers:',
    '    X-Content-Type-Options: [nosniff]',
  ];
  if (o.tls) {
    lines.push('  tls:', `    certificate: ${q(o.tls.certFile)}`, `    key: ${q(o.tls.keyFile)}`);
  }
  if (o.token) {
    lines.push(
      'auth:',
      '  token:',
      `    realm: ${q(o.token.realm)}`,
      `    service: ${q(o.token.service)}`,
      `    issuer: ${q(o.token.issuer)}`,
      `    rootcertbundle: ${q(o.token.certFile)}`,
    );
  }
  if (o.proxy) {
    lines.push('proxy:', `  remoteurl: ${q(o.proxy.remoteurl)}`);
    if (o.proxy.username !== undefined) lines.push(`  username: ${q(o.proxy.username)}`);
    if (o.proxy.password !== undefined) lines.push(`  password: ${q(o.proxy.password)}`);
  }
  return lines.join('\n') + '\n';
}

export async function startRegistry(t: Teardown, opts: RegistryOptions = {}): Promise<Registry> {
  const confDir = await makeTempDir('berth-registry');
  t.teardown(() => cleanup(confDir));
  const dataDir = opts.dataDir ?? path.join(confDir, 'data');
  await mkdir(dataDir, { recursive: true });
  const port = opts.port ?? (await freePort());
  const host = `127.0.0.1:${port}`;
  const url = `${opts.tls ? 'https' : 'http'}://${host}`;
  const configFile = path.join(confDir, 'config.yml');
  await writeFile(
    configFile,
    registryConfigYaml({
      addr: host,
      dataDir,
      secret: randomBytes(16).toString('hex'),
      token: opts.token,
      tls: opts.tls,
      proxy: opts.proxy,
    }),
  );

  const recorded: RegistryRequest[] = [];
  const events = new EventEmitter();
  events.setMaxListeners(0);
  let current: Service | null = null;
  let generation = 0;

  const barriersSeen = new Set<string>();
  const onLine = (line: string): void => {
    const m = ACCESS_LINE.exec(line);
    if (!m) return;
    const uri = m[2] ?? '';
    const barrier = /[?&]berth-barrier=([\w-]+)/.exec(uri);
    if (barrier?.[1]) {
      barriersSeen.add(barrier[1]);
      events.emit('barrier');
      return;
    }
    const qi = uri.indexOf('?');
    recorded.push({
      method: m[1] ?? '',
      path: qi < 0 ? uri : uri.slice(0, qi),
      uri,
      status: Number(m[3]),
      bytes: m[4] === '-' ? 0 : Number(m[4]),
      at: Date.now(),
      seq: recorded.length,
    });
    events.emit('request');
  };

  const start = async (): Promise<void> => {
    if (current && !current.hasExited()) throw new Error(`registry ${host} is already running (pid ${current.pid})`);
    generation++;
    const svc = spawnService(`registry#${generation}@${host}`, 'docker-registry', ['serve', configFile], {
      env: { ...process.env, OTEL_TRACES_EXPORTER: 'none' },
    });
    current = svc;
    svc.onLine((line) => onLine(line));
    // The probe carries the barrier marker so readiness polls stay out of requests().
    await waitForHttp(`${url}/v2/?berth-barrier=ready`, {
      ok: (s) => s === 200 || s === 401,
      timeoutMs: opts.readyTimeoutMs ?? 30_000,
      abortOn: svc.exited,
    }).catch((err: unknown) => {
      throw new Error(`${err instanceof Error ? err.message : String(err)}\nregistry output:\n${svc.output().slice(-4000)}`);
    });
  };

  const stop = async (): Promise<void> => {
    if (current) await current.stop('SIGTERM', 10_000);
  };

  const matches = (r: RegistryRequest, f: RequestFilter): boolean =>
    (f.method === undefined || r.method === f.method.toUpperCase()) &&
    (f.pathRe === undefined || (f.pathRe.lastIndex = 0, f.pathRe.test(r.path))) &&
    (f.status === undefined || r.status === f.status) &&
    (f.since === undefined || r.seq >= f.since);

  const requests = (filter: RequestFilter = {}): RegistryRequest[] => recorded.filter((r) => matches(r, filter)).map((r) => ({ ...r }));

  const waitForRequests = (pred: (reqs: RegistryRequest[]) => boolean, timeoutMs = 10_000): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      const check = (): boolean => pred(requests());
      if (check()) {
        resolve();
        return;
      }
      const onRequest = (): void => {
        if (check()) {
          clearTimeout(timer);
          events.removeListener('request', onRequest);
          resolve();
        }
      };
      const timer = setTimeout(() => {
        events.removeListener('request', onRequest);
        const tail = recorded.slice(-30).map((r) => `${r.method} ${r.uri} ${r.status}`).join('\n');
        reject(new Error(`waitForRequests: condition not met within ${timeoutMs} ms; last requests:\n${tail}`));
      }, timeoutMs);
      events.on('request', onRequest);
    });

  const barrier = async (timeoutMs = 10_000): Promise<void> => {
    const id = randomUUID();
    const seen = new Promise<void>((resolve, reject) => {
      const onBarrier = (): void => {
        if (!barriersSeen.has(id)) return;
        barriersSeen.delete(id);
        clearTimeout(timer);
        events.removeListener('barrier', onBarrier);
        resolve();
      };
      const timer = setTimeout(() => {
        events.removeListener('barrier', onBarrier);
        reject(new Error(`barrier: no access line for ${id} within ${timeoutMs} ms`));
      }, timeoutMs);
      events.on('barrier', onBarrier);
    });
    await httpStatus(`${url}/v2/?berth-barrier=${id}`, true, timeoutMs);
    await seen;
  };

  t.teardown(stop);
  await start();

  return {
    url,
    host,
    port,
    dataDir,
    configFile,
    stop,
    start,
    requests,
    waitForRequests,
    mark: () => recorded.length,
    barrier,
    get service(): Service {
      if (!current) throw new Error('registry not started');
      return current;
    },
  };
}
