/**
 * Which manifests are signatures (signatures.ts) and what that does to the
 * policy decision: a signature, known from Harbor's facts or from its own
 * bytes, is exempt from content trust and the vulnerability check (§2a step
 * 3, §12.1), with or without facts; nothing else is.
 */
import t from 'tap';
import { manifestSignatureType } from '../../src/harbor/signatures.js';
import { evaluate } from '../../src/harbor/policy.js';
import { decide } from '../../src/harbor/enforce.js';
import { normaliseProject } from '../../src/harbor/normalise.js';
import { artifactKey, type ArtifactPolicyFacts, type CveAllowlist, type PolicySnapshot } from '../../src/harbor/types.js';

const NOW = Date.UTC(2026, 7, 21, 12, 0, 0);
const NO_LIST: CveAllowlist = { items: [], expiresAt: null };
const D = 'sha256:' + 'a'.repeat(64);
const SUBJECT = { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: 'sha256:' + 'b'.repeat(64), size: 500 };
const EMPTY_CONFIG = { mediaType: 'application/vnd.oci.empty.v1+json', digest: 'sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a', size: 2 };
const IMAGE_CONFIG = { mediaType: 'application/vnd.oci.image.config.v1+json', digest: 'sha256:' + 'c'.repeat(64), size: 300 };
const layer = (mediaType: string, n = 1) => ({ mediaType, digest: 'sha256:' + String(n).repeat(64), size: 200 });
const SIMPLESIGNING = 'application/vnd.dev.cosign.simplesigning.v1+json';
const TAR_GZ = 'application/vnd.oci.image.layer.v1.tar+gzip';
const body = (m: Record<string, unknown>): Buffer => Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', ...m }));

t.test('manifestSignatureType: the forms Harbor records as signature accessories', async (t) => {
  t.equal(manifestSignatureType(body({ config: IMAGE_CONFIG, layers: [layer(SIMPLESIGNING)] })), 'signature.cosign', "cosign's tag scheme: simplesigning layers, no subject");
  t.equal(manifestSignatureType(body({ config: IMAGE_CONFIG, layers: [layer(SIMPLESIGNING, 1), layer(SIMPLESIGNING, 2)] })), 'signature.cosign', 'signed twice');
  t.equal(
    manifestSignatureType(body({ artifactType: 'application/vnd.dev.cosign.artifact.sig.v1+json', config: EMPTY_CONFIG, layers: [layer(SIMPLESIGNING)], subject: SUBJECT })),
    'signature.cosign',
    "cosign's OCI subject form",
  );
  t.equal(
    manifestSignatureType(body({ artifactType: 'application/vnd.dev.sigstore.bundle.v0.3+json', config: EMPTY_CONFIG, layers: [layer('application/vnd.dev.sigstore.bundle.v0.3+json')], subject: SUBJECT })),
    'signature.cosign',
    'a sigstore bundle',
  );
  t.equal(
    manifestSignatureType(body({ artifactType: 'application/vnd.cncf.notary.signature', config: EMPTY_CONFIG, layers: [layer('application/jose+json')], subject: SUBJECT })),
    'signature.notation',
    'notation, artifactType',
  );
  t.equal(
    manifestSignatureType(body({ config: { ...EMPTY_CONFIG, mediaType: 'application/vnd.cncf.notary.signature' }, layers: [layer('application/cose')], subject: SUBJECT })),
    'signature.notation',
    'notation, typed by its config (image-manifest mode)',
  );
  t.equal(
    manifestSignatureType(body({ artifactType: '', config: { ...EMPTY_CONFIG, mediaType: 'application/vnd.cncf.notary.signature' }, layers: [layer('application/cose')], subject: SUBJECT })),
    'signature.notation',
    'an empty artifactType falls back to the config',
  );
});

t.test('manifestSignatureType: everything else is not a signature', async (t) => {
  const cases: Array<[string, Buffer]> = [
    ['an image', body({ config: IMAGE_CONFIG, layers: [layer(TAR_GZ)] })],
    ['a docker image', body({ mediaType: 'application/vnd.docker.distribution.manifest.v2+json', config: IMAGE_CONFIG, layers: [layer('application/vnd.docker.image.rootfs.diff.tar.gzip')] })],
    ['an index', body({ mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [SUBJECT] })],
    ['simplesigning plus a filesystem layer', body({ config: IMAGE_CONFIG, layers: [layer(SIMPLESIGNING), layer(TAR_GZ, 2)] })],
    ['simplesigning plus something else', body({ config: IMAGE_CONFIG, layers: [layer(SIMPLESIGNING), layer('application/json', 2)] })],
    ['a runnable image typed as a notation signature', body({ artifactType: 'application/vnd.cncf.notary.signature', config: IMAGE_CONFIG, layers: [layer(TAR_GZ)], subject: SUBJECT })],
    ['a signature type without a subject', body({ artifactType: 'application/vnd.cncf.notary.signature', config: EMPTY_CONFIG, layers: [layer('application/jose+json')] })],
    ['an attestation (subject accessory, not a signature)', body({ artifactType: 'application/vnd.dsse.envelope.v1+json', config: EMPTY_CONFIG, layers: [layer('application/vnd.dsse.envelope.v1+json')], subject: SUBJECT })],
    ['an SBOM with a subject', body({ artifactType: 'application/vnd.goharbor.harbor.sbom.v1', config: EMPTY_CONFIG, layers: [layer('application/spdx+json')], subject: SUBJECT })],
    ['simplesigning layers under another artifactType', body({ artifactType: 'application/vnd.example', config: EMPTY_CONFIG, layers: [layer(SIMPLESIGNING)] })],
    ['no layers', body({ config: IMAGE_CONFIG, layers: [] })],
    ['a layer without a media type', body({ config: IMAGE_CONFIG, layers: [{ digest: 'sha256:' + '1'.repeat(64), size: 1 }] })],
    ['not JSON', Buffer.from('not json')],
    ['JSON that is not an object', Buffer.from('[1,2]')],
  ];
  for (const [what, b] of cases) t.equal(manifestSignatureType(b), null, what);
});

const strict = normaliseProject({ project_id: 1, name: 'edge', metadata: { enable_content_trust_cosign: 'true', enable_content_trust: 'true', prevent_vul: 'true', severity: 'none' } });
const vulnOnly = normaliseProject({ project_id: 2, name: 'scan', metadata: { prevent_vul: 'true', severity: 'low' } });
const cosignOnly = normaliseProject({ project_id: 3, name: 'sign', metadata: { enable_content_trust_cosign: 'true' } });

function facts(over: Partial<ArtifactPolicyFacts> = {}): ArtifactPolicyFacts {
  return {
    project: 'edge',
    repository: 'app',
    digest: D,
    type: 'IMAGE',
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    isIndex: false,
    scannable: true,
    scanStatus: null,
    vulnerabilities: [],
    accessories: [],
    isSignature: false,
    ...over,
  };
}

t.test('evaluate: a signature by its content is exempt, with facts or without', async (t) => {
  // What Harbor's JSON shows for cosign's earlier signature after a re-sign: a plain, unsigned IMAGE.
  const untaggedSig = facts({ scannable: false });
  t.match(evaluate(cosignOnly, untaggedSig, NO_LIST, NOW), { allow: false, reason: 'cosign', message: 'The image is not signed by cosign.' }, 'refused on the facts alone');
  t.same(evaluate(cosignOnly, untaggedSig, NO_LIST, NOW, 'signature.cosign'), { allow: true }, 'its content shows a signature');
  t.same(evaluate(strict, untaggedSig, NO_LIST, NOW, 'signature.notation'), { allow: true }, 'both signatures required, and no scan: still exempt');
  t.same(evaluate(vulnOnly, facts({ scanStatus: 'Error' }), NO_LIST, NOW, 'signature.cosign'), { allow: true }, 'the vulnerability check too');
  for (const p of [strict, vulnOnly, cosignOnly]) {
    t.match(evaluate(p, undefined, NO_LIST, NOW), { allow: false, reason: 'unknown-artifact' }, `${p.name}: no facts, no content: fail closed`);
    t.same(evaluate(p, undefined, NO_LIST, NOW, 'signature.cosign'), { allow: true }, `${p.name}: no facts, a signature by content`);
  }
  t.same(evaluate(strict, undefined, NO_LIST, NOW, null), evaluate(strict, undefined, NO_LIST, NOW), 'null is "not a signature"');
});

t.test('decide: the content exemption works offline, but not past an expired policy nor for an unknown project', async (t) => {
  const snapshot: PolicySnapshot = {
    syncedAt: NOW - 3600_000,
    systemAllowlist: NO_LIST,
    projects: { edge: strict },
    artifacts: { [artifactKey('edge', 'app', 'sha256:' + 'f'.repeat(64))]: facts({ digest: 'sha256:' + 'f'.repeat(64) }) },
    projectSyncedAt: {},
  };
  const base = { snapshot, project: 'edge', repository: 'app', digest: D, now: NOW, offlineGraceMs: 72 * 3600_000, onExpired: 'deny' as const };
  t.match(decide(base), { allow: false, reason: 'unknown-artifact' });
  t.same(decide({ ...base, manifestSignature: 'signature.notation' }), { allow: true }, 'no facts (offline, never synced): its bytes decide');
  t.match(decide({ ...base, offlineGraceMs: 60_000, manifestSignature: 'signature.cosign' }), { allow: false, reason: 'policy-expired' }, 'on_expired = "deny" refuses everything');
  t.same(decide({ ...base, offlineGraceMs: 60_000, onExpired: 'allow', manifestSignature: 'signature.cosign' }), { allow: true }, 'on_expired = "allow": still exempt');
  t.match(decide({ ...base, project: 'nope', manifestSignature: 'signature.cosign' }), { allow: false, reason: 'unknown-project' });
});
