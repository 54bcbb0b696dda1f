/**
 * The site as this node sees it: who the other berths are (a Membership),
 * who owns a digest (rendezvous hashing over every member, this node
 * included, so every node ranks the same way), and one signed registry
 * client per peer, each with its own circuit breaker. The cache asks it whom
 * to try (cache/site.ts); it never decides what is served.
 */
import type { Logger } from 'pino';
import type { Site } from '../cache/site.js';
import type { Metrics } from '../metrics/metrics.js';
import { createRegistryClient } from '../upstream/client.js';
import type { RegistryClient } from '../upstream/types.js';
import { signPeerRequest } from './auth.js';
import type { Membership } from './membership.js';
import { rankMembers } from './rendezvous.js';

export interface SitePeersOptions {
  membership: Membership;
  /** The site key: every request is signed with it. */
  key: () => Buffer;
  /** https when the peer listeners serve TLS. */
  scheme: 'http' | 'https';
  caFile?: string;
  timeouts: { connectMs: number; headersMs: number; bodyIdleMs: number };
  logger: Logger;
  metrics?: Metrics;
  now?: () => number;
}

/** Peers asked after the upstream failed: enough to find an imported blob on a site of a few dozen nodes, bounded. */
const MAX_PEERS_AFTER = 8;
/** Peers asked before the upstream: the owner and the next in line, for when the owner is down. */
const MAX_PEERS_BEFORE = 2;

export interface PeerState {
  peer: string;
  up: boolean;
  consecutiveFailures: number;
  lastError?: string;
}

export class SitePeers implements Site {
  readonly #opts: SitePeersOptions;
  readonly #clients = new Map<string, RegistryClient>();
  readonly #unsubscribe: () => void;

  constructor(opts: SitePeersOptions) {
    this.#opts = opts;
    // Clients of members that left are closed; new members get one when first asked.
    this.#unsubscribe = opts.membership.onChange((members) => {
      const live = new Set(members);
      for (const [peer, client] of this.#clients) {
        if (live.has(peer)) continue;
        this.#clients.delete(peer);
        void client.close().catch(() => undefined);
      }
      opts.logger.info({ members }, 'site members changed');
    });
  }

  get self(): string {
    return this.#opts.membership.self;
  }

  members(): readonly string[] {
    return this.#opts.membership.members();
  }

  /** The signed client for one peer (made on first use). */
  client(peer: string): RegistryClient {
    let c = this.#clients.get(peer);
    if (!c) {
      const { key, metrics } = this.#opts;
      const now = this.#opts.now ?? Date.now;
      c = createRegistryClient({
        registry: `peer ${peer}`,
        url: `${this.#opts.scheme}://${peer}`,
        timeouts: this.#opts.timeouts,
        ...(this.#opts.caFile ? { caFile: this.#opts.caFile } : {}),
        logger: this.#opts.logger.child({ peer }),
        // The next source is a better retry than the same peer again.
        retry: { maxRetries: 0 },
        circuit: { maxFails: 2, failTimeoutMs: 10_000 },
        sign: (method, target) => signPeerRequest(key(), { method, path: target, now: now() }),
        ...(metrics
          ? {
              observer: (e) => {
                const result = e.status === 'error' ? 'error' : e.status >= 500 ? 'unavailable' : e.status === 404 ? 'not_found' : e.status === 401 ? 'unauthorized' : 'ok';
                metrics.peerRequests.inc({ peer, result });
              },
            }
          : {}),
      });
      this.#clients.set(peer, c);
    }
    return c;
  }

  /** Whether this node owns the digest (ranks first for it). */
  owns(digest: string): boolean {
    return rankMembers(digest, [this.self, ...this.members()])[0] === this.self;
  }

  blobPeers(digest: string): { before: RegistryClient[]; after: RegistryClient[] } {
    const ranked = rankMembers(digest, [this.self, ...this.members()]);
    const at = ranked.indexOf(this.self);
    const before = ranked.slice(0, at).slice(0, MAX_PEERS_BEFORE);
    const after = [...ranked.slice(0, at).slice(MAX_PEERS_BEFORE), ...ranked.slice(at + 1)].slice(0, MAX_PEERS_AFTER);
    return { before: before.map((p) => this.client(p)), after: after.map((p) => this.client(p)) };
  }

  manifestPeers(key: string): RegistryClient[] {
    return rankMembers(key, this.members())
      .slice(0, MAX_PEERS_AFTER)
      .map((p) => this.client(p));
  }

  received(_peer: string, bytes: number): void {
    this.#opts.metrics?.peerBytes.inc({ direction: 'received' }, bytes);
  }

  /** Each member and what its circuit says (status, doctor). */
  states(): PeerState[] {
    return this.members().map((peer) => {
      const h = this.#clients.get(peer)?.health();
      return { peer, up: h?.up ?? true, consecutiveFailures: h?.consecutiveFailures ?? 0, ...(h?.lastError ? { lastError: h.lastError } : {}) };
    });
  }

  async close(): Promise<void> {
    this.#unsubscribe();
    await this.#opts.membership.stop();
    await Promise.all([...this.#clients.values()].map((c) => c.close()));
    this.#clients.clear();
  }
}
