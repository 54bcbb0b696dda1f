/**
 * This node's own [peers] settings, checked without asking anyone: the site key file, and the
 * listen address the peer listener would bind.
 */
import dns from 'node:dns/promises';
import fs from 'node:fs/promises';
import { isIP, isIPv4, isIPv6 } from 'node:net';
import type os from 'node:os';
import { ConfigError } from '../../config/errors.js';
import type { Config, PeersConfig } from '../../config/types.js';
import { parseMember } from '../../peers/membership.js';
import { finding, type Finding } from '../findings.js';
import { reason } from './probe.js';

/** How to restart berth, for the fixes that need one, whichever way it was installed. */
export const RESTART_HOW = '(sudo systemctl restart berth; the snap: sudo snap restart berth.daemon; the DaemonSet: kubectl -n berth rollout restart ds/berth)';

/** key_file: readable here, long enough, and not readable by every user of the node. */
export async function keyFinding(peers: PeersConfig): Promise<Finding> {
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
