/**
 * The hashing relays of measure 2 (bench/relay-server.ts), each in a
 * process of its own (this machine's node, no flags) in front of the
 * upstream: (a) hashes and relays, (b) also writes every chunk to a temp
 * file and fsyncs it. Measured ceilings for a hashing (caching) mirror in
 * Node on this machine: berth ÷ (b) is berth's own overhead on the fill.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, spawnService, tempDirFor, waitForHttp, type Service, type Teardown } from '../test/harness/procs.js';

export interface Relay {
  url: string;
  service: Service;
}

const PROGRAM = path.join(path.dirname(fileURLToPath(import.meta.url)), 'relay-server.js');

/** `write`: give the relay a temp directory of its own to write its fills to (relay b). */
export async function startRelay(t: Teardown, upstream: string, opts: { write: boolean }): Promise<Relay> {
  const port = await freePort();
  const args = [PROGRAM, String(port), upstream, ...(opts.write ? ['--write', await tempDirFor(t, 'berth-bench-relay')] : [])];
  const service = spawnService(opts.write ? 'relay-disk' : 'relay', process.execPath, args);
  t.teardown(() => service.stop('SIGTERM', 10_000));
  const url = `http://127.0.0.1:${port}`;
  await waitForHttp(`${url}/`, { timeoutMs: 15_000, abortOn: service.exited }).catch((err: unknown) => {
    throw new Error(`the relay did not start: ${err instanceof Error ? err.message : String(err)}\n${service.output().slice(-2000)}`);
  });
  return { url, service };
}
