/**
 * Site peers seen from outside the daemon. `berth status` and `berth doctor` run in another
 * process than `berth serve`, so they cannot read its circuits; what they can say honestly is
 * who the config names as members (the static list, or one DNS look-up, or one EndpointSlice
 * list, exactly as the daemon reads them) and what each member answers to the request the
 * daemon would send: a signed GET /v2/ on its peer listener. 200 means it is up and holds this
 * node's site key; 401 means another key, or a clock beyond clock_window; its Date header says
 * how far its clock is from ours. An unsigned GET /v2/ must be refused (401): something that
 * answers it is a registry, not a peer listener.
 */
import dns, { Resolver } from 'node:dns/promises';
import fs from 'node:fs/promises';
import { isIP, isIPv4, isIPv6 } from 'node:net';
import os from 'node:os';
import type { Logger } from 'pino';
import { ConfigError } from '../config/errors.js';
import type { Config, PeersConfig } from '../config/types.js';
import { signPeerRequest } from '../peers/auth.js';
import { DnsMembership, StaticMembership, parseMember, type DnsResolver, type Membership } from '../peers/membership.js';
import { kubernetesMembership, type KubernetesMembershipOptions } from '../peers/kubernetes.js';
import { createDispatcher, type UpstreamDispatcher } from '../upstream/dispatcher.js';
import { finding, type Finding } from './findings.js';

export interface SiteListing {
  /** This node's id among the members ([peers] listen, normalised). */
  self: string;
  /** Where the list comes from, for people: "the static list", "DNS name …", "EndpointSlices of ns/svc …". */
  source: string;
  /** The other members, as the daemon would see them now (self left out). */
  members: string[];
  /** The list could not be read (then members is empty); the daemon may still know one. */
  error?: string;
}

export interface ListOptions {
  logger: Logger;
  /** Bounds one EndpointSlice list. */
  timeoutMs: number;
  /** Tests: a resolver that asks their own DNS server. */
  resolver?: DnsResolver;
  /** Tests: the API server, token and CA of a simulator. */
  kubernetes?: Partial<KubernetesMembershipOptions>;
}

export function describeSource(peers: PeersConfig): string {
  const m = peers.membership;
  switch (m.kind) {
    case 'static':
      return 'the static list';
    case 'dns':
      return `DNS name ${m.name} (port ${m.port})`;
    case 'kubernetes':
      return `EndpointSlices of ${m.namespace}/${m.service} (port "${m.port}")`;
  }
}

/** Codes that mean "the name has no records", which is an answer (no peers), not a failure. */
const NO_RECORDS = new Set(['ENODATA', 'ENOTFOUND']);

/** Wraps a resolver so a failed look-up is seen here; DnsMembership only logs it and keeps the last list. */
function watchedResolver(inner: DnsResolver, failed: (why: string) => void): DnsResolver {
  const watch = async (p: Promise<string[]>): Promise<string[]> => {
    try {
      return await p;
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      if (typeof code !== 'string' || !NO_RECORDS.has(code)) failed(typeof code === 'string' ? code : (err as Error).message);
      throw err;
    }
  };
  return {
    resolve4: (name) => watch(inner.resolve4(name)),
    resolve6: (name) => watch(inner.resolve6(name)),
    cancel: () => inner.cancel(),
  };
}

/** One reading of the membership, with the daemon's own sources and rules; never throws. */
export async function listSite(peers: PeersConfig, opts: ListOptions): Promise<SiteListing> {
  const self = peers.listen;
  const source = describeSource(peers);
  const m = peers.membership;
  const log = opts.logger;
  let failure: string | undefined;
  let membership: Membership;
  switch (m.kind) {
    case 'static':
      return { self, source, members: [...new StaticMembership(m.members, self).members()] };
    case 'dns':
      membership = new DnsMembership({
        name: m.name,
        port: m.port,
        intervalMs: peers.resolveIntervalMs,
        self,
        log,
        resolver: watchedResolver(opts.resolver ?? siteResolver(m.servers), (why) => (failure ??= `cannot resolve ${m.name} (${why})`)),
      });
      break;
    case 'kubernetes':
      // The daemon's own API server, token and CA when the config names them (berth outside a pod).
      membership = kubernetesMembership({
        namespace: m.namespace,
        service: m.service,
        port: m.port,
        self,
        log,
        requestTimeoutMs: opts.timeoutMs,
        ...(m.apiServer ? { apiServer: m.apiServer } : {}),
        ...(m.tokenFile ? { tokenFile: m.tokenFile } : {}),
        ...(m.caFile ? { caFile: m.caFile } : {}),
        ...opts.kubernetes,
      });
      break;
  }
  try {
    await membership.start();
    const members = [...membership.members()];
    return failure === undefined ? { self, source, members } : { self, source, members: [], error: failure };
  } catch (err) {
    return { self, source, members: [], error: `cannot list them: ${err instanceof Error ? err.message : String(err)}` };
  } finally {
    await membership.stop().catch(() => undefined);
  }
}

export interface PeerProbe {
  peer: string;
  /** It answered HTTP at all. */
  reachable: boolean;
  /** It accepted this node's signature (200 to a signed GET /v2/) and refused an unsigned request: a peer of this site. */
  signed: boolean;
  /** The HTTP status of the signed GET /v2/ (of the unsigned one when there is no key to sign with). */
  status?: number;
  /** Its clock minus ours, from its Date header: whole seconds on the wire, so ±1 s. */
  skewMs?: number;
  error?: string;
  /** What is wrong, for doctor's fix; absent when signed. */
  problem?: 'unreachable' | 'tls' | 'key' | 'clock' | 'no-key' | 'not-a-peer';
}

export interface ProbeOptions {
  scheme: 'http' | 'https';
  caFile?: string;
  /** The site key, or why it cannot be read (then only reachability is probed). */
  key: Buffer | { error: string };
  /** Connect and answer, per request. */
  timeoutMs: number;
  /** [peers] clock_window: a skew past it explains a 401. */
  clockWindowMs: number;
}

function reason(err: unknown): string {
  const e = err as { cause?: { code?: string; message?: string }; code?: string; message?: string };
  // UND_ERR_* codes say less than the socket's own ("ECONNREFUSED", a certificate verdict).
  return e.cause?.code ?? e.cause?.message ?? (e.code && !e.code.startsWith('UND_ERR_') ? e.code : undefined) ?? e.message ?? String(err);
}

const TLS_CODE = /CERT|SELF_SIGNED|ISSUER|SIGNATURE|ALTNAME|TLS|SSL|EPROTO/;

/** "3 s ahead of ours" / "2 s behind ours". */
export function describeSkew(skewMs: number): string {
  const s = Math.round(Math.abs(skewMs) / 1000);
  return s === 0 ? 'within 1 s of ours' : `${s} s ${skewMs > 0 ? 'ahead of' : 'behind'} ours`;
}

interface Answer {
  status: number;
  skewMs?: number;
}

async function get(transport: UpstreamDispatcher, url: string, headers: Record<string, string>, timeoutMs: number): Promise<Answer> {
  const started = Date.now();
  const u = new URL(url);
  const res = await transport.dispatcher.request({ origin: u.origin, path: u.pathname + u.search, method: 'GET', headers, signal: AbortSignal.timeout(timeoutMs) });
  const arrived = Date.now();
  await res.body.dump();
  const header = res.headers.date;
  const date = Date.parse((Array.isArray(header) ? header[0] : header) ?? '');
  // Date is truncated to the second: the peer's clock read somewhere in [date, date + 1 s).
  return Number.isNaN(date) ? { status: res.statusCode } : { status: res.statusCode, skewMs: date + 500 - (started + arrived) / 2 };
}

async function probeOne(peer: string, transport: UpstreamDispatcher, opts: ProbeOptions): Promise<PeerProbe> {
  const url = `${opts.scheme}://${peer}/v2/`;
  const key = Buffer.isBuffer(opts.key) ? opts.key : null;
  let signed: Answer;
  try {
    signed = await get(transport, url, key ? signPeerRequest(key, { method: 'GET', path: '/v2/', now: Date.now() }) : {}, opts.timeoutMs);
  } catch (err) {
    const why = reason(err);
    const tls = TLS_CODE.test(why);
    return { peer, reachable: false, signed: false, error: tls ? `TLS failed (${why})` : `unreachable (${why})`, problem: tls ? 'tls' : 'unreachable' };
  }
  const base = { peer, reachable: true, status: signed.status, ...(signed.skewMs !== undefined ? { skewMs: Math.round(signed.skewMs) } : {}) };
  if (!key) {
    const why = (opts.key as { error: string }).error;
    return signed.status === 401
      ? { ...base, signed: false, error: `answers (401 to an unsigned request), but this user cannot sign: ${why}`, problem: 'no-key' }
      : { ...base, signed: false, error: `answers an unsigned GET /v2/ with ${signed.status}: not a berth peer listener (and this user cannot sign: ${why})`, problem: 'not-a-peer' };
  }
  if (signed.status === 401) {
    const clock = signed.skewMs !== undefined && Math.abs(signed.skewMs) > opts.clockWindowMs - 1000;
    return clock
      ? { ...base, signed: false, error: `refuses this node's signature (401): its clock is ${describeSkew(signed.skewMs!)}, beyond clock_window (±${opts.clockWindowMs / 1000} s)`, problem: 'clock' }
      : { ...base, signed: false, error: 'refuses this node\'s signature (401): it holds another site key', problem: 'key' };
  }
  if (signed.status !== 200) return { ...base, signed: false, error: `answers a signed GET /v2/ with ${signed.status}: not a berth peer listener`, problem: 'not-a-peer' };
  // A registry that answers everyone would pass the signed check too.
  try {
    const unsigned = await get(transport, url, {}, opts.timeoutMs);
    if (unsigned.status !== 401) return { ...base, signed: false, error: `answers GET /v2/ without a signature (${unsigned.status}): a registry, not a berth peer listener`, problem: 'not-a-peer' };
  } catch (err) {
    return { ...base, reachable: false, signed: false, error: `unreachable on the second request (${reason(err)})`, problem: 'unreachable' };
  }
  return { ...base, signed: true };
}

/** Probes each peer, all at once; never throws. */
export async function probePeers(peers: readonly string[], opts: ProbeOptions): Promise<PeerProbe[]> {
  if (peers.length === 0) return [];
  let transport: UpstreamDispatcher;
  try {
    transport = createDispatcher({
      registry: 'site peers',
      timeouts: { connectMs: opts.timeoutMs, headersMs: opts.timeoutMs, bodyIdleMs: opts.timeoutMs },
      connections: 2,
      keepAliveTimeoutMs: 1000,
      ...(opts.caFile !== undefined ? { caFile: opts.caFile } : {}),
    });
  } catch (err) {
    return peers.map((peer) => ({ peer, reachable: false, signed: false, error: `cannot set up TLS: ${(err as Error).message}`, problem: 'tls' as const }));
  }
  try {
    return await Promise.all(peers.map((peer) => probeOne(peer, transport, opts)));
  } finally {
    await transport.close().catch(() => undefined);
  }
}

/** The site key as probePeers wants it: the bytes, or why this user cannot have them. */
export function siteKeyOrError(peers: PeersConfig): Buffer | { error: string } {
  try {
    return peers.key.reveal();
  } catch (err) {
    return { error: (err as Error).message };
  }
}

export interface PeerFindingOptions {
  timeoutMs: number;
  logger: Logger;
  /** This host's addresses; tests pass their own. */
  interfaces?: () => NodeJS.Dict<os.NetworkInterfaceInfo[]>;
  list?: Omit<ListOptions, 'logger' | 'timeoutMs'>;
}

/** Past this a peer's clock is worth fixing before it reaches clock_window. */
export const CLOCK_WARN_MS = 5_000;

const NTP = 'run NTP on every node (timedatectl set-ntp true; chrony or systemd-timesyncd)';
const RESTART_HOW = '(sudo systemctl restart berth; the snap: sudo snap restart berth.daemon; the DaemonSet: kubectl -n berth rollout restart ds/berth)';

/** key_file: readable here, long enough, and not readable by every user of the node. */
async function keyFinding(peers: PeersConfig): Promise<Finding> {
  const file = peers.keyFile;
  try {
    peers.key.reveal();
  } catch (err) {
    const msg = err instanceof ConfigError ? `${err.key}: ${err.problem}` : (err as Error).message;
    const perm = /not readable/.test(msg);
    return finding('error', 'peers.key', `site key ${msg}: berth serve refuses to start without it`,
      perm
        ? `make ${file} readable by the user berth runs as (mode 0600, owned by it), or run berth doctor as root`
        : `write one for the site (head -c 32 /dev/urandom | base64 > ${file}; chmod 600 ${file}), copy the same file to every node and restart berth on each ${RESTART_HOW}`);
  }
  let mode: number;
  try {
    mode = (await fs.stat(file)).mode;
  } catch {
    return finding('ok', 'peers.key', `site key ${file}: readable, at least 32 bytes`);
  }
  if (mode & 0o004) {
    return finding('warn', 'peers.key', `site key ${file} is readable by every user of this node (mode ${(mode & 0o777).toString(8)}): whoever reads it can fetch anything this site caches from the peer listeners, private images included`, `chmod 600 ${file} (or 0640 with berth's group)`);
  }
  return finding('ok', 'peers.key', `site key ${file}: readable, at least 32 bytes, not readable by every user`);
}

function normalIp(address: string): string {
  return isIPv6(address) ? new URL(`http://[${address}]/`).hostname.slice(1, -1) : address;
}

/** [peers] listen: an address of this host (the daemon could not bind another), reachable by the others. */
export async function listenFinding(config: Config, interfaces: () => NodeJS.Dict<os.NetworkInterfaceInfo[]>): Promise<Finding> {
  const peers = config.peers!;
  const own = new Map<string, string>();
  for (const [name, list] of Object.entries(interfaces())) for (const a of list ?? []) own.set(normalIp(a.address), name);
  let addresses: string[];
  if (isIP(peers.host) !== 0) addresses = [normalIp(peers.host)];
  else {
    try {
      addresses = (await dns.lookup(peers.host, { all: true })).map((a) => normalIp(a.address));
    } catch (err) {
      return finding('error', 'peers.listen', `[peers] listen ${peers.listen}: ${peers.host} does not resolve (${reason(err)})`, 'set [peers] listen (or BERTH_PEERS_LISTEN) to this node\'s own address');
    }
  }
  const mine = addresses.find((a) => own.has(a));
  const choices = [...own.keys()].filter((a) => !isLoopback(a)).slice(0, 4).join(', ');
  if (mine === undefined) {
    return finding('error', 'peers.listen', `[peers] listen ${peers.listen} is not an address of this host${addresses[0] !== peers.host ? ` (${peers.host} is ${addresses.join(', ')})` : ''}: berth serve cannot listen there`,
      `set [peers] listen (or BERTH_PEERS_LISTEN) to this node's address as the others reach it${choices ? ` (this host has ${choices})` : ''}`);
  }
  const others = config.peers!.membership.kind === 'static' ? config.peers!.membership.members.filter((m) => m !== peers.listen) : null;
  const othersLocal = others !== null && others.every((m) => isLoopback(parseMember(m).host));
  if (isLoopback(mine) && !othersLocal) {
    return finding('warn', 'peers.listen', `[peers] listen ${peers.listen} is a loopback address: the other nodes cannot reach this one`, `set [peers] listen (or BERTH_PEERS_LISTEN) to this node's address on the site's network${choices ? ` (this host has ${choices})` : ''}`);
  }
  return finding('ok', 'peers.listen', `peer listener ${peers.listen} is on this host (${own.get(mine)}), apart from containerd's ${config.server.listen}`);
}

function isLoopback(ip: string): boolean {
  return ip === '::1' || (isIPv4(ip) && ip.startsWith('127.'));
}

function listingFinding(peers: PeersConfig, site: SiteListing): Finding {
  if (site.error !== undefined) {
    const fix = peers.membership.kind === 'kubernetes'
      ? peers.membership.apiServer
        ? `check that ${peers.membership.apiServer} answers with [peers] kubernetes ca_file and token_file, and the Role that lets berth get, list and watch endpointslices`
        : 'run berth doctor inside a berth pod (kubectl -n berth exec ds/berth -- berth doctor), and check the Role that lets berth get, list and watch endpointslices'
      : 'check the node\'s DNS resolver and the name in [peers] dns';
    return finding('error', 'peers.members', `site members from ${site.source}: ${site.error}`, fix);
  }
  if (peers.membership.kind === 'static' && !peers.membership.members.includes(peers.listen)) {
    return finding('warn', 'peers.members', `this node (${peers.listen}) is not in [peers] members: the other nodes, with the same list, never ask it`, `list every node in members, this one included, the same list on every node`);
  }
  if (site.members.length === 0) {
    return finding('warn', 'peers.members', `no other members in ${site.source}: this node shares its cache with nobody`, peers.membership.kind === 'static' ? 'add the other nodes\' [peers] listen addresses to members' : 'start berth on the other nodes, and check that they are ready');
  }
  return finding('ok', 'peers.members', `${site.members.length} other member${site.members.length === 1 ? '' : 's'} from ${site.source}: ${site.members.join(', ')}`);
}

function memberFinding(p: PeerProbe, self: boolean, port: number): Finding {
  const check = self ? 'peers.self' : 'peers.member';
  const who = self ? `this node's peer listener ${p.peer}` : `peer ${p.peer}`;
  if (p.signed) return finding('ok', check, `${who} accepts this node's signature${p.skewMs !== undefined && !self ? `; its clock is ${describeSkew(p.skewMs)}` : ''}`);
  const what = `${who} ${p.error ?? 'failed'}`;
  switch (p.problem) {
    case 'unreachable':
      return self
        ? finding('warn', check, `${what}: berth is not running, or runs without this [peers] section`, `start berth, or restart it after changing [peers] ${RESTART_HOW}`)
        : finding('warn', check, `${what}: pulls there go to the next member or the upstream`, `start berth on that node with the same [peers] section, and let TCP port ${port} through between the nodes`);
    case 'tls':
      return finding('error', check, what, 'set [peers] ca_file to the CA that signed the peers\' certificates (and check each certificate names the node\'s address)');
    case 'key':
      return self
        ? finding('error', check, `${what}: the daemon runs with another key than key_file holds now`, `restart berth so it reads key_file again ${RESTART_HOW}`)
        : finding('error', check, `${what}: the two nodes share nothing`, `give every node the same key_file contents, then restart berth on the nodes whose file changed ${RESTART_HOW}`);
    case 'clock':
      return finding('error', check, `${what}: the two nodes share nothing`, NTP);
    case 'no-key':
      return finding('warn', check, what, 'run berth doctor as root (or as the user berth runs as) to check the signature');
    default:
      return finding('error', check, what, 'list each node\'s [peers] listen address as a member, never its [server] listen');
  }
}

function clockFindings(probes: readonly PeerProbe[], windowMs: number): Finding[] {
  const known = probes.filter((p) => p.skewMs !== undefined);
  if (known.length === 0) return [];
  const out: Finding[] = [];
  for (const p of known) {
    const skew = p.skewMs!;
    if (Math.abs(skew) > windowMs) out.push(finding('error', 'peers.clock', `peer ${p.peer}: its clock is ${describeSkew(skew)}, beyond clock_window (±${windowMs / 1000} s): each refuses the other's requests`, NTP));
    else if (Math.abs(skew) > CLOCK_WARN_MS) out.push(finding('warn', 'peers.clock', `peer ${p.peer}: its clock is ${describeSkew(skew)}; past clock_window (±${windowMs / 1000} s) the two stop sharing`, NTP));
  }
  if (out.length > 0) return out;
  const worst = Math.max(...known.map((p) => Math.abs(p.skewMs!)));
  return [finding('ok', 'peers.clock', `clocks of ${known.length} peer${known.length === 1 ? '' : 's'} within ${Math.max(1, Math.round(worst / 1000))} s of this node's`)];
}

/** `berth doctor`'s [peers] checks: the key, the listen address, the membership, each member's answer and clock. */
export async function peerFindings(config: Config, opts: PeerFindingOptions): Promise<Finding[]> {
  const peers = config.peers;
  if (!peers) return [];
  const out: Finding[] = [await keyFinding(peers), await listenFinding(config, opts.interfaces ?? os.networkInterfaces)];
  const site = await listSite(peers, { logger: opts.logger, timeoutMs: opts.timeoutMs, ...opts.list });
  out.push(listingFinding(peers, site));
  const probe: ProbeOptions = { scheme: peers.tls ? 'https' : 'http', key: siteKeyOrError(peers), timeoutMs: opts.timeoutMs, clockWindowMs: peers.clockWindowMs, ...(peers.caFile ? { caFile: peers.caFile } : {}) };
  const [self, ...members] = await probePeers([peers.listen, ...site.members], probe);
  out.push(memberFinding(self!, true, peers.port));
  for (const p of members) out.push(memberFinding(p, false, parseMember(p.peer).port));
  out.push(...clockFindings(members, peers.clockWindowMs));
  return out;
}

/** The resolver the daemon uses for `dns` membership: `dns_servers` when set, else the system's. */
function siteResolver(servers: readonly string[] | undefined): Resolver {
  const r = new Resolver({ timeout: 2_000, tries: 2 });
  if (servers && servers.length > 0) r.setServers([...servers]);
  return r;
}
