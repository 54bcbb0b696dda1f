/**
 * Which manifests are signatures. Harbor exempts a signature accessory from
 * every pull check (reference §2a step 3, §12.1: `SkipPolicyChecking`), so a
 * verifier can fetch the signature of an image the policy guards. Harbor
 * knows from its accessory table, filled on push by two rules
 * (H:src/server/middleware/cosign/cosign.go, …/subject/subject.go):
 *
 *  - cosign's tag scheme: a manifest pushed as `sha256-<hex>.sig` with a
 *    `application/vnd.dev.cosign.simplesigning.v1+json` layer;
 *  - an OCI `subject`, typed by `artifactType` (else the config media type):
 *    cosign's `…cosign.artifact.sig.v1+json` or sigstore bundle, notation's
 *    `application/vnd.cncf.notary.signature`.
 *
 * berth has two ways to the same answer, either suffices:
 *
 *  1. Harbor's facts (`ArtifactPolicyFacts.isSignature`): a digest a synced
 *     artifact lists as its signature accessory, or whose own artifact JSON
 *     shows a signature type or the `.sig` tag (`signatureTypeOf`).
 *  2. The manifest's own bytes (`manifestSignatureType`), which berth holds
 *     whenever it serves them, online or offline, synced or not. This covers
 *     what the JSON does not show: cosign's earlier signature after a re-sign
 *     (the tag moved on; Harbor renders it as a plain IMAGE), and any
 *     signature berth has no facts for yet.
 *
 * The content rule is Harbor's push rule made a little narrower, never wider:
 * the tag scheme needs *every* layer to be a simplesigning payload (the tag
 * is not known on a pull by digest), and no form may carry a filesystem
 * layer, so a runnable image dressed up as a signature is not exempted by its
 * looks (only by Harbor's own accessory record).
 */
import type { SignatureType } from './types.js';

export const COSIGN_SIGNATURE_TYPES: ReadonlySet<string> = new Set(['application/vnd.dev.cosign.artifact.sig.v1+json', 'application/vnd.dev.sigstore.bundle.v0.3+json']);
export const NOTATION_SIGNATURE_TYPE = 'application/vnd.cncf.notary.signature';
export const COSIGN_SIMPLESIGNING = 'application/vnd.dev.cosign.simplesigning.v1+json';
/** cosign's tag for the signatures of `sha256:<hex>`. */
export const COSIGN_SIG_TAG = /^sha256-[a-f0-9]{64}\.sig$/;

/** The accessory type a media type or artifactType names, if it is a signature's. */
export function signatureTypeOfMediaType(t: string | undefined): SignatureType | null {
  if (t === undefined) return null;
  if (COSIGN_SIGNATURE_TYPES.has(t)) return 'signature.cosign';
  if (t === NOTATION_SIGNATURE_TYPE) return 'signature.notation';
  return null;
}

/** Layers a container runtime unpacks into a filesystem. */
function isFilesystemLayer(mediaType: string): boolean {
  return mediaType.startsWith('application/vnd.oci.image.layer.') || mediaType.startsWith('application/vnd.docker.image.rootfs.');
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

/**
 * The signature type a manifest's own bytes show, or null (not a signature,
 * an index, not JSON). See the file comment for the rules.
 */
export function manifestSignatureType(body: Uint8Array): SignatureType | null {
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(body).toString('utf8'));
  } catch {
    return null;
  }
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) return null;
  const m = doc as Record<string, unknown>;
  if (m.manifests !== undefined || !Array.isArray(m.layers) || m.layers.length === 0) return null;
  const layerTypes = m.layers.map((l: unknown) => (l && typeof l === 'object' ? str((l as Record<string, unknown>).mediaType) : undefined));
  if (layerTypes.some((t) => t === undefined || isFilesystemLayer(t))) return null;
  const config = m.config && typeof m.config === 'object' ? (m.config as Record<string, unknown>) : undefined;
  const subject = m.subject && typeof m.subject === 'object' ? (m.subject as Record<string, unknown>) : undefined;
  if (subject && typeof subject.digest === 'string') {
    // Harbor types a subject's accessory by artifactType, else by the config's media type.
    return signatureTypeOfMediaType(str(m.artifactType) || str(config?.mediaType));
  }
  if (m.artifactType === undefined && layerTypes.every((t) => t === COSIGN_SIMPLESIGNING)) return 'signature.cosign';
  return null;
}
