/**
 * Who the other berths of this site are. berth keeps no membership protocol of its own (no
 * gossip, no heartbeats to tune): the list comes from what the site already trusts, a static
 * list in the config or the A/AAAA records of a DNS name (a Kubernetes headless Service lists its
 * ready pods that way), re-resolved on an interval so members come and go without a restart.
 *
 * Members are "host:port" strings in one normal form (lower case, IPv6 compressed and in
 * brackets), because rendezvous hashing weighs the string: two nodes that spell a member
 * differently would disagree on who owns what. A node finds itself in the list by its own peer
 * `listen` address and leaves itself out of `members()`; it is still part of the site, so
 * ranking owners is done over `[self, ...members()]`.
 *
 * DNS failures are not news about the site: a failed lookup keeps the last good list, while an
 * answer that names nobody (no such name, or no records) empties it.
 */
import { Resolver } from 'node:dns/promises';
import { isIP, isIPv4, isIPv6 } from 'node:net';
import type { Logger } from 'pino';

/** Why a "host:port" cannot name a peer. The message quotes the value: addresses are no secret. */
export class PeerAddressError extends Error {
  /** Stable code to match on; the message is for people. */
  readonly code = 'EPEERADDR';
  readonly value: string;

  constructor(value: string, problem: string) {
    super(`${JSON.stringify(value)}: ${problem}`);
    this.name = 'PeerAddressError';
    this.value = value;
  }
}

export interface PeerAddress {
  /** Lower case; an IPv6 address compressed, without brackets. */
  host: string;
  port: number;
  /** The normal form, "10.0.0.11:5051", "[fd00::11]:5051", "node-1.site:5051": what members() lists. */
  id: string;
}

const LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/**
 * Parses and normalises a member or listen address. An address must say where a peer can be
 * reached, so the any-address (0.0.0.0, [::]) is refused: a node listening there could not
 * recognise itself in the list.
 */
export function parseMember(text: string): PeerAddress {
  const bad = (problem: string): PeerAddressError => new PeerAddressError(text, problem);
  let hostPart: string;
  let portPart: string;
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0) throw bad('an opening "[" without its "]"');
    hostPart = text.slice(1, close);
    if (text.charAt(close + 1) !== ':') throw bad('needs a port after the address, e.g. [fd00::11]:5051');
    portPart = text.slice(close + 2);
    if (hostPart.includes('%')) throw bad('a zone index (%eth0) means nothing on another node; use a global or unique-local address');
    if (!isIPv6(hostPart)) throw bad('only an IPv6 address goes in brackets');
  } else {
    const colon = text.lastIndexOf(':');
    if (colon < 0) throw bad('needs a port, e.g. 10.0.0.11:5051');
    hostPart = text.slice(0, colon);
    portPart = text.slice(colon + 1);
    if (hostPart.includes(':')) throw bad(`an IPv6 address goes in brackets, e.g. [${hostPart}]:${portPart}`);
  }
  if (!/^[0-9]{1,5}$/.test(portPart) || Number(portPart) < 1 || Number(portPart) > 65535) {
    throw bad(`the port must be a number from 1 to 65535, not ${JSON.stringify(portPart)}`);
  }
  const port = Number(portPart);

  if (isIPv6(hostPart)) {
    // WHATWG URL serialisation is RFC 5952's: lower case, zeros compressed.
    const host = new URL(`http://[${hostPart}]/`).hostname.slice(1, -1);
    if (host === '::') throw bad('the any-address cannot be reached; name the node\'s own address');
    return { host, port, id: `[${host}]:${port}` };
  }
  if (isIPv4(hostPart)) {
    if (hostPart === '0.0.0.0') throw bad('the any-address cannot be reached; name the node\'s own address');
    return { host: hostPart, port, id: `${hostPart}:${port}` };
  }
  const host = hostPart.toLowerCase().replace(/\.$/, '');
  if (host === '') throw bad('needs a host before the port');
  // Dotted numbers that isIPv4 refused (leading zeros, 256) would be read as octal or fail later.
  if (/^[0-9.]+$/.test(host)) throw bad('is not a valid IPv4 address');
  if (host.length > 253 || !host.split('.').every((label) => LABEL.test(label))) throw bad('the host is neither an IP address nor a DNS name');
  return { host, port, id: `${host}:${port}` };
}

/** The site's other members, as one of the sources below maintains them. */
export interface Membership {
  /** This node's own id (its peer listen address, normalised): the name the others know it by. */
  readonly self: string;
  /** First look-up; resolves when members() is first known (a failed first look-up leaves it empty). */
  start(): Promise<void>;
  /** The other members' ids: sorted, without duplicates, without self. */
  members(): readonly string[];
  /** Called with the new list whenever it changes; returns the function that unsubscribes. */
  onChange(fn: (members: readonly string[]) => void): () => void;
  /** Stops re-resolving; resolves once no look-up is running any more. */
  stop(): Promise<void>;
}

/** Sorted, deduplicated, self left out. */
function memberList(ids: Iterable<string>, self: string): readonly string[] {
  return Object.freeze([...new Set(ids)].filter((id) => id !== self).sort());
}

/** A changing member list and the listeners told of each change: what every dynamic membership keeps. */
export class MemberSet {
  #members: readonly string[] = Object.freeze([]);
  readonly #listeners = new Set<(members: readonly string[]) => void>();

  get(): readonly string[] {
    return this.#members;
  }

  onChange(fn: (members: readonly string[]) => void): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  /** Takes a sorted, frozen list; returns the one it replaced, or undefined (and keeps it) when they are the same. */
  replace(next: readonly string[]): readonly string[] | undefined {
    const before = this.#members;
    if (next.length === before.length && next.every((id, i) => id === before[i])) return undefined;
    this.#members = next;
    return before;
  }

  /** Tells each listener the current list; one that throws is reported and the others are still told. */
  notify(failed: (err: unknown) => void): void {
    for (const fn of this.#listeners) {
      try {
        fn(this.#members);
      } catch (err) {
        failed(err);
      }
    }
  }
}

/** `[peers] members = [...]`: the list from the config, as it is for the life of the process. */
export class StaticMembership implements Membership {
  readonly self: string;
  readonly #members: readonly string[];

  /** Throws PeerAddressError for the first entry (or `self`) that is no host:port. */
  constructor(list: readonly string[], self: string) {
    this.self = parseMember(self).id;
    this.#members = memberList(
      list.map((entry) => parseMember(entry).id),
      this.self,
    );
  }

  async start(): Promise<void> {}

  members(): readonly string[] {
    return this.#members;
  }

  onChange(_fn: (members: readonly string[]) => void): () => void {
    return () => {};
  }

  async stop(): Promise<void> {}
}

/** The part of node:dns/promises' Resolver that DNS membership uses (a Resolver is one). */
export interface DnsResolver {
  resolve4(name: string): Promise<string[]>;
  resolve6(name: string): Promise<string[]>;
  cancel(): void;
}

export interface DnsMembershipOptions {
  /** The name whose A and AAAA records are the members ("berth-peers.berth.svc.cluster.local"). */
  name: string;
  /** The peer port: DNS A/AAAA records carry addresses only. */
  port: number;
  /** Time between the end of one look-up and the start of the next. */
  intervalMs: number;
  /** This node's peer listen address. */
  self: string;
  log: Logger;
  /**
   * The DNS servers to ask (`[peers] dns_servers`), in the forms setServers takes ("10.0.0.2",
   * "10.0.0.2:5353", "[fd00::2]:53"); default: the system's (resolv.conf). Not with `resolver`.
   */
  servers?: readonly string[];
  /** Defaults to a c-ares resolver with `servers` (or the system's) and short timeouts; tests point one at their own server. */
  resolver?: DnsResolver;
}

/** Answers that say "the name has no addresses of this family", as opposed to "could not ask". */
const NO_RECORDS = new Set(['ENODATA', 'ENOTFOUND']);

function errorCode(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : String(err);
}

function systemResolver(servers: readonly string[] | undefined): Resolver {
  const resolver = new Resolver({ timeout: 2_000, tries: 2 });
  // Throws ERR_INVALID_IP_ADDRESS for an entry that is no address (the config has checked them).
  if (servers !== undefined && servers.length > 0) resolver.setServers(servers);
  return resolver;
}

/** `[peers] dns = "name:port"`: the members are the name's addresses, re-resolved every interval. */
export class DnsMembership implements Membership {
  readonly self: string;
  readonly #opts: DnsMembershipOptions;
  readonly #resolver: DnsResolver;
  readonly #set = new MemberSet();
  #failing = false;
  #started = false;
  #stopped = false;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;

  constructor(opts: DnsMembershipOptions) {
    if (!(opts.intervalMs > 0)) throw new RangeError('intervalMs must be positive');
    if (!Number.isInteger(opts.port) || opts.port < 1 || opts.port > 65535) throw new RangeError(`port ${opts.port} is not 1 to 65535`);
    this.#opts = opts;
    this.self = parseMember(opts.self).id;
    // A look-up that hangs would hold up the next one; c-ares retries with these bounds.
    this.#resolver = opts.resolver ?? systemResolver(opts.servers);
  }

  async start(): Promise<void> {
    if (this.#started) return;
    this.#started = true;
    this.#running = this.#refresh();
    await this.#running;
    this.#schedule();
  }

  members(): readonly string[] {
    return this.#set.get();
  }

  onChange(fn: (members: readonly string[]) => void): () => void {
    return this.#set.onChange(fn);
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#resolver.cancel();
    await this.#running;
  }

  #schedule(): void {
    if (this.#stopped) return;
    this.#timer = setTimeout(() => {
      this.#running = this.#refresh().finally(() => this.#schedule());
    }, this.#opts.intervalMs);
    // Membership alone must not keep the process alive.
    this.#timer.unref();
  }

  /** One look-up of both families; never throws. */
  async #refresh(): Promise<void> {
    const { name, log } = this.#opts;
    const [v4, v6] = await Promise.allSettled([this.#resolver.resolve4(name), this.#resolver.resolve6(name)]);
    if (this.#stopped) return; // cancelled by stop(): not a failure worth a word
    const addresses: string[] = [];
    for (const result of [v4, v6]) {
      if (result.status === 'fulfilled') addresses.push(...result.value);
      else if (!NO_RECORDS.has(errorCode(result.reason))) {
        // Half an answer is no answer: a family that failed may hold members we would drop.
        const code = errorCode(result.reason);
        if (!this.#failing) log.warn({ name, code, members: this.#set.get() }, 'peer DNS look-up failed; keeping the last known members');
        else log.debug({ name, code }, 'peer DNS look-up still failing');
        this.#failing = true;
        return;
      }
    }
    if (this.#failing) log.info({ name }, 'peer DNS look-up works again');
    this.#failing = false;
    this.#update(this.#ids(addresses));
  }

  #ids(addresses: string[]): string[] {
    const ids: string[] = [];
    for (const ip of addresses) {
      try {
        ids.push(parseMember(isIP(ip) === 6 ? `[${ip}]:${this.#opts.port}` : `${ip}:${this.#opts.port}`).id);
      } catch (err) {
        this.#opts.log.warn({ name: this.#opts.name, address: ip, err: (err as Error).message }, 'peer DNS answer holds an unusable address; left out');
      }
    }
    return ids;
  }

  #update(ids: string[]): void {
    const next = memberList(ids, this.self);
    const before = this.#set.replace(next);
    if (before === undefined) return;
    const added = next.filter((id) => !before.includes(id));
    const removed = before.filter((id) => !next.includes(id));
    this.#opts.log.info({ name: this.#opts.name, added, removed, members: next }, 'peer members changed');
    this.#set.notify((err) => this.#opts.log.error({ err }, 'a peer membership listener failed'));
  }
}
