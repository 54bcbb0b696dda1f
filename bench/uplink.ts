/**
 * A site's uplink: a TCP proxy in front of the upstream whose downstream
 * bytes (upstream → berths) share one rate, for every connection together,
 * as one thin WAN link does. With no rate it only forwards. The pacing is a
 * virtual clock: each chunk is handed on when the link would have finished
 * carrying it after the chunks before it (any connection's), so timer
 * lateness does not add up and an idle link earns no burst (beyond
 * SLACK_MS of it: see `pace`). Requests (berth → upstream) pass unpaced:
 * they are small.
 */
import net from 'node:net';
import type { Teardown } from '../test/harness/procs.js';
import { freePort } from '../test/harness/procs.js';
import { now } from './stats.js';

/**
 * How far behind the link's schedule a chunk may be and still have the
 * schedule kept (the lost time made up by handing on the next chunks at
 * once): timers fire 1 ms or more late, and a connection has one chunk on
 * the "link" at a time, so without it every late timer was lost for good
 * and 100 MiB/s came out at 37-50 (a 64 KiB chunk is 0.63 ms of it). At
 * most this much of the link's time is ever sent as a burst.
 */
export const SLACK_MS = 5;

/**
 * The link's virtual clock: when a chunk of `bytes` handed to a link that
 * is free at `freeAt` (ms) at `t` (ms) is through it, at `rate` bytes per
 * second. A link idle since before `t - slackMs` starts from there.
 */
export function pace(freeAt: number, t: number, bytes: number, rate: number, slackMs = SLACK_MS): number {
  return Math.max(t - slackMs, freeAt) + (bytes / rate) * 1000;
}

export interface Uplink {
  url: string;
  /** Bytes per second from the upstream for all connections together; null: unlimited. */
  setRate(bytesPerSecond: number | null): void;
}

export async function startUplink(t: Teardown, target: string): Promise<Uplink> {
  const to = new URL(target);
  let rate: number | null = null;
  /** When the link is free again (ms, `now()`'s clock). */
  let freeAt = 0;
  const sockets = new Set<net.Socket>();

  const server = net.createServer((client) => {
    const up = net.connect(Number(to.port), to.hostname);
    sockets.add(client).add(up);
    /** Chunks on the "link" for this connection, and whether the upstream has ended. */
    let pending = 0;
    let ended = false;
    const close = (): void => {
      client.destroy();
      up.destroy();
      sockets.delete(client);
      sockets.delete(up);
    };
    client.on('error', close).on('close', close);
    up.on('error', close);
    // After a FIN from the upstream the client's side closes once the paced bytes are through.
    up.on('close', () => {
      sockets.delete(up);
      if (!ended) close();
    });
    client.pipe(up);
    const deliver = (chunk: Buffer): void => {
      pending--;
      if (client.destroyed) return;
      if (client.write(chunk)) up.resume();
      else client.once('drain', () => up.resume());
      // A FIN must not overtake bytes still on the "link".
      if (ended && pending === 0) client.end();
    };
    up.on('data', (chunk: Buffer) => {
      up.pause();
      pending++;
      if (rate === null) {
        deliver(chunk);
        return;
      }
      const t0 = now();
      freeAt = pace(freeAt, t0, chunk.length, rate);
      if (freeAt <= t0) {
        deliver(chunk);
        return;
      }
      // The link's pace is what is measured here, not a wait for some state.
      setTimeout(() => deliver(chunk), freeAt - t0);
    });
    up.on('end', () => {
      ended = true;
      if (pending === 0 && !client.destroyed) client.end();
    });
  });
  const port = await freePort();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  );
  return {
    url: `http://127.0.0.1:${port}`,
    setRate(r) {
      rate = r;
      freeAt = 0;
    },
  };
}
