/**
 * `berth doctor`: everything between a pod's image pull and berth's cache,
 * checked on the node, one finding per line with the fix.
 *
 *   containerd   found, version new enough, CRI config_path (and its traps)
 *   hosts.toml   per mirrored registry: present, valid, berth first
 *   berth        answering GET /v2/ where hosts.toml points
 *   upstreams    each reachable (and Harbor), credentials accepted
 *   disk         room under the cache dir for max_size
 *   tls          berth's and each peer's certificate, skip_verify left on
 *   clock        the node's clock against Harbor's (through [harbor] ca_file)
 *   peers        [peers]: the site key, the listen address, the members, each
 *                one's answer to a signed GET /v2/ and its clock (peer-checks.ts)
 *
 * More checks plug in through `extraChecks`.
 */
import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import pino, { type Logger } from 'pino';
import type { Config } from '../config/types.js';
import {
  analyzeRegistrySettings,
  atLeast,
  detectContainerd,
  locateContainerdConfig,
  readRegistrySettings,
  PLAIN_CONFIG,
  type ContainerdSite,
  type DetectedContainerd,
} from './containerd-config.js';
import { finding, type Finding } from './findings.js';
import { endpoints, parseHostsToml, sameUrl } from './hosts-toml.js';
import { berthLiveFinding, diskFinding, harborFinding, probeBerth, upstreamFindings } from './probes.js';
import { resolveHostsDir } from './targets.js';
import { readOrNull } from './certs-dir.js';
import { peerFindings } from './peer-checks.js';
import { clockSkewFinding, ownCertificateFinding, peerCertificateFindings, skipVerifyFindings } from './tls-checks.js';

export interface DoctorContext {
  config: Config;
  berthUrl: string;
  timeoutMs: number;
  logger: Logger;
}

export type DoctorCheck = (ctx: DoctorContext) => Promise<Finding[]>;

export interface DoctorOptions {
  config: Config;
  /** Where containerd should reach berth (from [server] listen unless --berth-url). */
  berthUrl: string;
  /** --containerd-config: the file to read instead of looking for one. */
  containerdConfig?: string | undefined;
  /** --hosts-dir: the certs.d to check instead of containerd's config_path. */
  hostsDir?: string | undefined;
  /** Per network check (default 3 s). */
  timeoutMs?: number;
  logger?: Logger;
  /** Finds containerd; tests pass their own. */
  detect?: () => Promise<DetectedContainerd | null>;
  extraChecks?: readonly DoctorCheck[];
}

const CONFIGURE = 'sudo berth configure containerd';

/** containerd's version and CRI registry settings; returns the directories CRI reads hosts.toml from. */
async function containerdChecks(opts: DoctorOptions, berthDir: string): Promise<{ findings: Finding[]; dirs: string[] | null }> {
  const findings: Finding[] = [];
  const found = await (opts.detect ?? (() => detectContainerd()))();
  const version = found?.version ?? null;
  if (!found) {
    findings.push(finding('warn', 'containerd.version', 'containerd not found (neither `containerd --version` on PATH nor MicroK8s\' answered)', 'install containerd, or ignore this on a machine where berth serves other nodes'));
  } else if (version === null) {
    findings.push(finding('warn', 'containerd.version', `${found.bin} --version gave no version I can read (${found.raw})`, 'check the containerd install'));
  } else if (!atLeast(version, 1, 5)) {
    findings.push(finding('error', 'containerd.version', `containerd ${version.text} (${found.bin}) does not read certs.d/*/hosts.toml (1.5+ does)`, 'upgrade containerd to 1.6 or later'));
  } else {
    findings.push(finding('ok', 'containerd.version', `containerd ${version.text} (${found.bin})`));
  }

  const site: ContainerdSite = locateContainerdConfig(opts.containerdConfig) ?? { file: `${PLAIN_CONFIG} (absent: built-in defaults)`, editFile: PLAIN_CONFIG, restart: 'sudo systemctl restart containerd', substitutions: {} };
  let text: string | null;
  try {
    text = opts.containerdConfig !== undefined || existsSync(site.file) ? await readOrNull(site.file) : '';
  } catch (e) {
    findings.push(finding('error', 'containerd.config', `cannot read ${site.file} (${(e as Error).message})`, 'run berth doctor as root'));
    return { findings, dirs: null };
  }
  if (text === null) {
    findings.push(finding('error', 'containerd.config', `${site.file} does not exist`, 'pass the file containerd runs with (--containerd-config FILE)'));
    return { findings, dirs: null };
  }
  try {
    const analysis = analyzeRegistrySettings(readRegistrySettings(text, site.file, site.substitutions), version, site, berthDir);
    findings.push(...analysis.findings);
    return { findings, dirs: analysis.dirs };
  } catch (e) {
    findings.push(finding('error', 'containerd.config', (e as Error).message, `fix the file, then ${site.restart}`));
    return { findings, dirs: null };
  }
}

/** The first directory that has `<registry>/`, as containerd's lookup does. */
async function registryDir(dirs: readonly string[], registry: string): Promise<string | null> {
  for (const d of dirs) {
    try {
      if ((await fs.stat(path.join(d, registry))).isDirectory()) return path.join(d, registry);
    } catch {
      // not in this one
    }
  }
  return null;
}

async function hostsFinding(registry: string, dirs: readonly string[], berthUrl: string, configureFix: string): Promise<Finding> {
  const check = 'hosts.berth';
  const dir = await registryDir(dirs, registry);
  const file = path.join(dir ?? path.join(dirs[0] ?? '', registry), 'hosts.toml');
  const text = dir === null ? null : await readOrNull(file).catch(() => null);
  if (text === null) return finding('error', check, `${registry}: no ${file}: containerd pulls ${registry} images straight from the registry`, configureFix);
  let doc;
  try {
    doc = parseHostsToml(text, file);
  } catch (e) {
    return finding('error', check, `${registry}: ${(e as Error).message}: containerd ignores the file and pulls from the registry itself`, `fix or remove the file, then ${configureFix}`);
  }
  if (doc.hosts.length === 0 && doc.server !== undefined) {
    return finding('error', check, `${registry}: ${file} has \`server\` but no [host."…"] table: containerd 1.6 rejects it ("invalid \`host\` tree") and pulls from the registry itself`, configureFix);
  }
  const list = endpoints(doc);
  const at = list.findIndex((u) => sameUrl(u, berthUrl));
  if (at < 0) return finding('error', check, `${registry}: ${file} does not name berth (${berthUrl}); containerd tries ${list.join(', ') || 'the registry itself'}`, `${configureFix} (or --berth-url when containerd reaches berth at another address)`);
  if (at > 0) return finding('warn', check, `${registry}: ${file} lists ${list.slice(0, at).join(', ')} before berth: those are tried first`, configureFix);
  const fallback = list.filter((u) => !sameUrl(u, berthUrl));
  const way = fallback.length > 0 ? `then ${fallback.join(', ')}` : 'no fallback';
  return finding('ok', check, `${registry}: ${file} sends pulls to berth first (${way})`);
}

/** hosts.toml files that send pulls to berth for registries berth does not mirror (berth answers those 403). */
async function strayFindings(dir: string | undefined, mirrored: ReadonlySet<string>, berthUrl: string): Promise<Finding[]> {
  if (dir === undefined) return [];
  let names: string[];
  try {
    names = await fs.readdir(dir);
  } catch {
    return [];
  }
  const out: Finding[] = [];
  for (const name of names.sort()) {
    if (mirrored.has(name)) continue;
    const text = await readOrNull(path.join(dir, name, 'hosts.toml')).catch(() => null);
    if (text === null) continue;
    try {
      if (endpoints(parseHostsToml(text, name)).some((u) => sameUrl(u, berthUrl))) {
        out.push(finding('warn', 'hosts.stray', `${name}: ${path.join(dir, name, 'hosts.toml')} sends pulls to berth, which has no [[upstream]] for ${name} and refuses them`, `add an [[upstream]] for ${name}, or run ${CONFIGURE} to restore that file`));
      }
    } catch {
      // not ours to judge; containerd ignores a broken file for that registry only
    }
  }
  return out;
}

export async function runDoctor(opts: DoctorOptions): Promise<Finding[]> {
  const timeoutMs = opts.timeoutMs ?? 3000;
  const logger = opts.logger ?? pino({ level: 'silent' });
  const berthDir = opts.hostsDir ?? resolveHostsDir({}).dir;
  const configureFix = opts.hostsDir !== undefined ? `${CONFIGURE} --hosts-dir ${opts.hostsDir}` : CONFIGURE;
  const ctx: DoctorContext = { config: opts.config, berthUrl: opts.berthUrl, timeoutMs, logger };

  // Network checks run while the local ones are read.
  const berthProbe = probeBerth(opts.berthUrl, timeoutMs);
  const upstreams = upstreamFindings(opts.config.upstreams, timeoutMs, logger);
  const harbor = opts.config.harbor ? harborFinding(opts.config.harbor, timeoutMs, logger).then((f) => [f]) : Promise.resolve([]);
  const peers = peerFindings(opts.config, { timeoutMs, logger }).catch((e: unknown) => [finding('error', 'peers.check', `the peer checks failed to run: ${(e as Error).message}`, 'report this as a bug')]);

  const findings: Finding[] = [];
  const ctd = await containerdChecks(opts, berthDir);
  findings.push(...ctd.findings);
  const dirs = opts.hostsDir !== undefined ? [opts.hostsDir] : ctd.dirs && ctd.dirs.length > 0 ? ctd.dirs : [berthDir];
  if (opts.hostsDir !== undefined && ctd.dirs && ctd.dirs.length > 0 && !ctd.dirs.some((d) => path.resolve(d) === path.resolve(berthDir))) {
    findings.push(finding('warn', 'hosts.dir', `${berthDir} is not in containerd's config_path (${ctd.dirs.join(':')}): Kubernetes pulls do not read it`, `point config_path at ${berthDir}, or configure the directory containerd reads`));
  }

  findings.push(berthLiveFinding(opts.berthUrl, await berthProbe));
  for (const u of opts.config.upstreams) findings.push(await hostsFinding(u.registry, dirs, opts.berthUrl, configureFix));
  findings.push(...(await strayFindings(dirs[0], new Set(opts.config.upstreams.map((u) => u.registry)), opts.berthUrl)));
  findings.push(...(await upstreams), ...(await harbor));
  findings.push(await diskFinding(opts.config));
  findings.push(...(await ownCertificateFinding(opts.config)));
  findings.push(...(await peerCertificateFindings(opts.config, timeoutMs)));
  findings.push(...(await skipVerifyFindings(dirs)));
  findings.push(...(await clockSkewFinding(opts.config, timeoutMs)));
  findings.push(...(await peers));
  for (const check of opts.extraChecks ?? []) {
    try {
      findings.push(...(await check(ctx)));
    } catch (e) {
      findings.push(finding('error', 'doctor.check', `a check failed to run: ${(e as Error).message}`, 'report this as a bug'));
    }
  }
  return findings;
}
