import t from 'tap';
import pino from 'pino';
import { viaHarborProject } from '../../src/upstream/via-harbor.js';
import { UpstreamError, type RegistryClient, type ManifestAnswer } from '../../src/upstream/types.js';

/** A client that records what it was asked and answers from a script. */
function fake(registry: string, answer: (repo: string) => ManifestAnswer | null | Error) {
  const asked: string[] = [];
  const c: RegistryClient = {
    registry,
    async getManifest(repo, ref) {
      asked.push(`GET ${repo}:${ref}`);
      const a = answer(repo);
      if (a instanceof Error) throw a;
      return a;
    },
    async headManifest(repo, ref) {
      asked.push(`HEAD ${repo}:${ref}`);
      const a = answer(repo);
      if (a instanceof Error) throw a;
      return a;
    },
    async headBlob(repo, d) {
      asked.push(`HEADBLOB ${repo}@${d}`);
      const a = answer(repo);
      if (a instanceof Error) throw a;
      return a ? { size: a.size } : null;
    },
    async getBlob() {
      return null;
    },
    async getTags() {
      return null;
    },
    async ping() {
      return true;
    },
    health: () => ({ up: true, consecutiveFailures: 0 }),
    async close() {},
  };
  return { c, asked };
}

const m = (digest: string): ManifestAnswer => ({ digest, mediaType: 'application/vnd.oci.image.manifest.v1+json', size: 10 });
const logger = pino({ level: 'silent' });

t.test('docker.io content is asked of the Harbor proxy-cache project first', async (t) => {
  const harbor = fake('harbor', () => m('sha256:h'));
  const direct = fake('docker.io', () => m('sha256:d'));
  const via = viaHarborProject(direct.c, harbor.c, 'dockerhub-proxy', logger);
  t.equal(via.registry, 'docker.io', 'keeps the upstream name containerd uses');
  t.equal((await via.getManifest('library/nginx', '1.27'))?.digest, 'sha256:h');
  t.same(harbor.asked, ['GET dockerhub-proxy/library/nginx:1.27'], 'the project prefixes the repository');
  t.same(direct.asked, [], 'docker.io not asked while Harbor answers');
});

t.test('Harbor unreachable: straight to the upstream', async (t) => {
  const harbor = fake('harbor', () => new UpstreamError('UPSTREAM_UNREACHABLE', 'harbor', 'connect ECONNREFUSED'));
  const direct = fake('docker.io', () => m('sha256:d'));
  const via = viaHarborProject(direct.c, harbor.c, 'dockerhub-proxy', logger);
  t.equal((await via.headManifest('library/nginx', '1.27'))?.digest, 'sha256:d');
  t.same(direct.asked, ['HEAD library/nginx:1.27'], 'the upstream gets its own repository name');
  t.equal((await via.headBlob('library/nginx', 'sha256:x'))?.size, 10);
});

t.test("Harbor's answers stand while it answers: a 404 or a refusal is not a reason to go around it", async (t) => {
  const harbor404 = fake('harbor', () => null);
  const direct = fake('docker.io', () => m('sha256:d'));
  t.equal(await viaHarborProject(direct.c, harbor404.c, 'p', logger).getManifest('library/x', 'v1'), null);
  const refused = fake('harbor', () => new UpstreamError('UPSTREAM_POLICY', 'harbor', 'refused', { status: 412, upstreamMessage: 'no' }));
  await t.rejects(viaHarborProject(direct.c, refused.c, 'p', logger).getManifest('library/x', 'v1'), { code: 'UPSTREAM_POLICY' });
  t.same(direct.asked, [], 'never went around Harbor');
});
