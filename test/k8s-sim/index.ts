/**
 * A Kubernetes API simulator for the EndpointSlice membership source: what a pod sees of the
 * API server (HTTPS with the cluster CA, the service account's token file) and a handle to change
 * the peers' Service underneath it. See server.ts for what it speaks.
 *
 *   const sim = await startK8sSim(t, { namespace: 'berth', service: 'berth-peers' });
 *   sim.put({ name: 'berth-peers-a', endpoints: [{ addresses: ['10.0.0.12'] }] });
 *   kubernetesMembership({ apiServer: sim.url, caFile: sim.caFile, tokenFile: sim.tokenFile, ... });
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { issueLeaf, makeCa } from '../harness/pki.js';
import { tempDirFor, type Teardown } from '../harness/procs.js';
import { K8sSim } from './server.js';

export { K8sSim, type SimRequest } from './server.js';
export type { SimEndpoint, SimPort, SliceSpec } from './model.js';

export interface StartedK8sSim extends K8sSim {
  /** The cluster CA, as mounted at .../serviceaccount/ca.crt. */
  caFile: string;
  /** The service account token file, as mounted at .../serviceaccount/token. */
  tokenFile: string;
  /** Rotates the token: the server accepts only the new one; the file is rewritten when `writeFile`. */
  rotateToken(next: string, opts?: { writeFile?: boolean }): Promise<void>;
}

export async function startK8sSim(t: Teardown, o: { namespace: string; service: string; token?: string }): Promise<StartedK8sSim> {
  const dir = await tempDirFor(t, 'k8s-sim');
  const ca = await makeCa(dir, 'kubernetes-ca');
  const leaf = await issueLeaf(ca, 'kube-apiserver', { ips: ['127.0.0.1'], dns: ['kubernetes.default.svc'] });
  const token = o.token ?? 'eyJhbGciOiJSUzI1NiJ9.sim-token-1.sig';
  const tokenFile = path.join(dir, 'token');
  await writeFile(tokenFile, `${token}\n`);
  const sim = new K8sSim({ namespace: o.namespace, service: o.service, token, certFile: leaf.certFile, keyFile: leaf.keyFile });
  await sim.listen();
  t.teardown(() => sim.close());
  return Object.assign(sim, {
    caFile: ca.certFile,
    tokenFile,
    async rotateToken(next: string, opts: { writeFile?: boolean } = {}) {
      sim.token = next;
      if (opts.writeFile !== false) await writeFile(tokenFile, next);
    },
  });
}
