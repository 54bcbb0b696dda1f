/**
 * Which member of the site owns a blob: rendezvous (highest-random-weight) hashing. Every member
 * gets a weight for the digest, a hash of the pair; the heaviest owns it and the rest, in weight
 * order, are whom to ask next when the owner is down, slow or wrong. Every node that sees the
 * same member list computes the same order with no coordination, and when a member leaves only
 * the digests it owned move (each to its own runner-up); when one joins it takes about 1/N of the
 * digests, evenly from the others. A consistent-hash ring needs virtual nodes to get there; this
 * needs nothing but one hash per member, cheap for a site's 3 to 50 nodes.
 *
 * The list to rank is the whole site, this node included: a node that ranks itself first fills
 * from the upstream itself. Members are the normalised "host:port" strings of membership.ts, so
 * every node spells a member the same way and so weighs it the same.
 */
import { createHash } from 'node:crypto';

/** The first 8 bytes of sha256(member "\0" digest): NUL cannot occur in either, so pairs cannot collide by concatenation. */
export function weight(digest: string, member: string): bigint {
  return createHash('sha256').update(`${member}\0${digest}`).digest().readBigUInt64BE(0);
}

/**
 * The members in the order to ask for `digest`: the owner first. Ties in weight (which a 64-bit
 * hash makes all but impossible) go to the smaller member name, so the order is total and no
 * two nodes can disagree on it. Duplicates are counted once.
 */
export function rankMembers(digest: string, members: readonly string[]): string[] {
  const weighed = [...new Set(members)].map((member) => ({ member, w: weight(digest, member) }));
  weighed.sort((a, b) => (a.w !== b.w ? (a.w > b.w ? -1 : 1) : a.member < b.member ? -1 : a.member > b.member ? 1 : 0));
  return weighed.map((x) => x.member);
}

/** The member that owns `digest`, or undefined for an empty list. */
export function owner(digest: string, members: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestWeight = -1n;
  for (const member of members) {
    const w = weight(digest, member);
    if (w > bestWeight || (w === bestWeight && best !== undefined && member < best)) {
      best = member;
      bestWeight = w;
    }
  }
  return best;
}
