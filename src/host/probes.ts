/**
 * The network and disk checks of `berth doctor`: is berth answering, can each
 * upstream (and Harbor) be reached, is there room for the cache. Each returns
 * findings and never throws; every network check is bounded by a short timeout.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import type { Config, HarborConfig, UpstreamConfig } from '../config/types.js';
import { formatSize } from '../config/units.js';
import { Layout } from '../store/layout.js';
import { ConfigError } from '../config/errors.js';
import type { Password } from '../upstream/auth.js';
import { cachedBytes } from '../cache/content-store.js';
import { createRegistryClient, type ClientOptions } from '../upstream/client.js';
import { UpstreamError } from '../upstream/types.js';
import { finding, type Finding } from './findings.js';

function reason(e: unknown): string {
  const err = e as { cause?: { code?: string; message?: string }; code?: string; message?: string };
  return err.cause?.code ?? err.cause?.message ?? err.code ?? err.message ?? String(e);
}

/** GET <url>/v2/: a registry answers 200 with Docker-Distribution-API-Version (berth always does). */
export async function probeBerth(url: string, timeoutMs: number): Promise<{ live: boolean; detail: string }> {
  try {
    const res = await fetch(`${url}/v2/`, { signal: AbortSignal.timeout(timeoutMs), redirect: 'manual' });
    await res.body?.cancel();
    const api = res.headers.get('docker-distribution-api-version');
    if (res.status === 200 && api !== null) return { live: true, detail: `answers GET /v2/ (${api})` };
    return { live: false, detail: `answers GET /v2/ with ${res.status}${api === null ? ' and no Docker-Distribution-API-Version' : ''}: not a registry` };
  } catch (e) {
    return { live: false, detail: `is not answering (${reason(e)})` };
  }
}

export function berthLiveFinding(url: string, probe: { live: boolean; detail: string }): Finding {
  return probe.live
    ? finding('ok', 'berth.live', `berth at ${url} ${probe.detail}`)
    : finding('error', 'berth.live', `berth at ${url} ${probe.detail}: containerd falls back to the upstream, or fails where berth is the only host`, 'sudo systemctl start berth (journalctl -u berth says why it stopped); on MicroK8s with the snap: sudo snap start berth.daemon');
}

interface Reachable {
  registry: string;
  url: string;
  username?: string | undefined;
  password?: Password | undefined;
  caFile?: string | undefined;
  skipVerify: boolean;
}

async function ping(target: Reachable, check: string, label: string, timeoutMs: number, logger: Logger): Promise<Finding> {
  const opts: ClientOptions = {
    registry: target.registry,
    url: target.url,
    skipVerify: target.skipVerify,
    timeouts: { connectMs: timeoutMs, headersMs: timeoutMs, bodyIdleMs: timeoutMs },
    logger,
    retry: { maxRetries: 0 },
    pool: { connections: 1, keepAliveTimeoutMs: 10 },
  };
  if (target.username !== undefined) opts.username = target.username;
  if (target.password !== undefined) opts.password = target.password;
  if (target.caFile !== undefined) opts.caFile = target.caFile;
  let client;
  try {
    client = createRegistryClient(opts);
  } catch (e) {
    return finding('error', check, `${label}: cannot set up a client (${reason(e)})`, 'check ca_file and url in the config');
  }
  try {
    const ok = await client.ping({ signal: AbortSignal.timeout(timeoutMs * 3) });
    return ok
      ? finding('ok', check, `${label} answers as a registry`)
      : finding('warn', check, `${label} answers GET /v2/ but not as a registry`, 'check url: it must be the registry API base (e.g. https://registry-1.docker.io)');
  } catch (e) {
    const code = e instanceof UpstreamError ? e.code : undefined;
    const msg = e instanceof Error ? e.message : String(e);
    // The upstream asked for credentials and password_file could not be read (by this user).
    if (e instanceof ConfigError) return finding('error', check, `${label}: ${msg}`, `make ${e.key} readable by the user berth runs as, or run berth doctor as root`);
    if (code === 'UPSTREAM_AUTH') return finding('error', check, `${label} refuses berth's credentials (${msg})`, 'check username and password_file');
    if (code === 'UPSTREAM_TLS') return finding('error', check, `${label}: TLS failed (${msg})`, 'set ca_file to the CA that signed its certificate, and check the clock');
    return finding('warn', check, `${label} is unreachable (${msg}): berth serves only what it has cached`, 'check the uplink, DNS, proxy and firewall to this address');
  } finally {
    await client.close().catch(() => undefined);
  }
}

export function upstreamFindings(upstreams: readonly UpstreamConfig[], timeoutMs: number, logger: Logger): Promise<Finding[]> {
  return Promise.all(
    upstreams.map((u) =>
      ping({ registry: u.registry, url: u.url, username: u.username, password: u.password, caFile: u.caFile, skipVerify: u.skipVerify }, 'upstream.reachable', `upstream ${u.registry} (${u.url})`, timeoutMs, logger),
    ),
  );
}

export function harborFinding(harbor: HarborConfig, timeoutMs: number, logger: Logger): Promise<Finding> {
  const registry = new URL(harbor.url).host;
  return ping({ registry, url: harbor.url, username: harbor.username, password: harbor.password, caFile: harbor.caFile, skipVerify: harbor.skipVerify }, 'harbor.reachable', `Harbor ${harbor.url}`, timeoutMs, logger);
}

/** The nearest existing directory at or above `dir` (the cache dir may not exist before the first serve). */
async function existingAncestor(dir: string): Promise<string> {
  let d = path.resolve(dir);
  for (;;) {
    try {
      await fs.access(d);
      return d;
    } catch {
      const up = path.dirname(d);
      if (up === d) return d;
      d = up;
    }
  }
}

/** Below this free space fills start failing soon, whatever max_size says. */
const NEARLY_FULL = 256 * 1024 * 1024;

export async function diskFinding(config: Config): Promise<Finding> {
  const dir = config.cache.dir;
  const at = await existingAncestor(dir);
  let free: number;
  try {
    const st = await fs.statfs(at);
    free = st.bavail * st.bsize;
  } catch (e) {
    return finding('warn', 'cache.disk', `cannot read free space under ${at} (${reason(e)})`, 'check the mount');
  }
  const used = at === path.resolve(dir) ? cachedBytes(new Layout(dir).indexFile) : 0;
  const room = free + used;
  const max = config.cache.maxSizeBytes;
  const state = `${formatSize(used)} cached, ${formatSize(free)} free under ${at}, max_size ${formatSize(max)}`;
  if (room >= max) return finding('ok', 'cache.disk', `cache: ${state}`);
  if (free < NEARLY_FULL) return finding('error', 'cache.disk', `cache: ${state}: the disk is nearly full, fills will fail`, 'free space on that filesystem, or move [cache] dir to a larger one');
  return finding('warn', 'cache.disk', `cache: ${state}: the cache can only grow to ${formatSize(room)}`, `lower [cache] max_size to at most ${formatSize(room)}, or free space on that filesystem`);
}
