/**
 * The other berths of the site, as the cache sees them. src/peers
 * implements it (membership, rendezvous hashing, signed requests); the cache
 * only asks whom to try, in which order, and talks to each peer as to one
 * more registry client. Nothing a peer answers bypasses this node's own
 * checks: blob bytes are verified by digest like any fill, manifests by their
 * digest, and the policy gate runs on the node that answers containerd.
 */
import type { RegistryClient } from '../upstream/types.js';

export interface Site {
  /**
   * Peers to ask for a blob, by the rendezvous order of its digest over the
   * site (this node included): those ranked before this node come before the
   * upstream (the owner first), the others after it (asked when the upstream
   * cannot serve: the uplink is down, or the blob was imported elsewhere).
   */
  blobPeers(digest: string): { before: readonly RegistryClient[]; after: readonly RegistryClient[] };
  /** Peers to ask, in order, for a manifest or a tag this node lacks while its upstream is away. */
  manifestPeers(key: string): readonly RegistryClient[];
  /** Counts bytes that came from a peer (the WAN saving an operator reads). */
  received(peer: string, bytes: number): void;
}
