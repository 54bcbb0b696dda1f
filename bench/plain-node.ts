/**
 * The plain Node peer: bench/plain-node-server.ts in a process of its own
 * (this machine's node, no flags), serving the upstream's blob files at the
 * registry's blob URLs like nginx does. berth ÷ this is berth's own
 * overhead over what Node costs anyway.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, spawnService, waitForHttp, type Service, type Teardown } from '../test/harness/procs.js';

export interface PlainNode {
  url: string;
  service: Service;
}

const PROGRAM = path.join(path.dirname(fileURLToPath(import.meta.url)), 'plain-node-server.js');

/** `registryDataDir` is a Distribution filesystem root, as for startNginx. */
export async function startPlainNode(t: Teardown, registryDataDir: string): Promise<PlainNode> {
  const port = await freePort();
  const blobs = path.join(registryDataDir, 'docker', 'registry', 'v2', 'blobs', 'sha256');
  const service = spawnService('plain-node', process.execPath, [PROGRAM, String(port), blobs]);
  t.teardown(() => service.stop('SIGTERM', 10_000));
  const url = `http://127.0.0.1:${port}`;
  await waitForHttp(`${url}/`, { timeoutMs: 15_000, abortOn: service.exited }).catch((err: unknown) => {
    throw new Error(`the plain Node server did not start: ${err instanceof Error ? err.message : String(err)}\n${service.output().slice(-2000)}`);
  });
  return { url, service };
}
