/**
 * `berth doctor`'s [peers] checks put together: this node's key and listen address, the
 * membership as the daemon would read it, each member's answer to a signed request, and the
 * members' clocks.
 */
import os from 'node:os';
import type { Logger } from 'pino';
import type { Config, PeersConfig } from '../../config/types.js';
import { parseMember } from '../../peers/membership.js';
import { finding, type Finding } from '../findings.js';
import { listSite, type ListOptions, type SiteListing } from './listing.js';
import { RESTART_HOW, keyFinding, listenFinding } from './local.js';
import { describeSkew, probePeers, siteKeyOrError, type PeerProbe, type ProbeOptions } from './probe.js';

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
