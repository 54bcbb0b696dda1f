/**
 * The hold-back rule, shared by every reader that streams bytes it has not
 * finished checking (a fill's followers, an uncached pass-through): of the
 * requested range [start, end], everything received may go out at once,
 * except the range's last byte, which waits until the whole blob matched
 * its digest. A corrupted transfer then reaches a client as a truncated
 * body, never as a complete wrong one.
 *
 * Returns the offset of the last byte that may be emitted, given that the
 * bytes [0, received) have arrived (-1 or less: none yet).
 */
export function emitLimit(received: number, end: number, verified: boolean): number {
  return verified ? Math.min(end, received - 1) : Math.min(received - 1, end - 1);
}
