/**
 * Harbor policy: the REST client, sync into a snapshot, the pure §12 policy
 * chain, and what persists (snapshot, remembered pull-secret credentials).
 * The cache and HTTP layers consult this folder; it never consults them.
 */
export * from './types.js';
export { HarborError, isHarborUnreachable, type HarborErrorCode } from './errors.js';
export { createHarborClient, type HarborClient, type HarborClientOptions, type ArtifactQuery, type ArtifactListQuery, type CallOptions } from './client.js';
export { evaluate, effectiveAllowlist, isAllowlistExpired, projectEnforces, type Decision, type DenyReason } from './policy.js';
export { decide, type EnforceDecision, type EnforceInput, type EnforceReason } from './enforce.js';
export { manifestSignatureType, signatureTypeOfMediaType } from './signatures.js';
export { normaliseProject, normaliseAllowlist, artifactFacts, parseSeverityVersion3, severityCode, isTrue, signatureTypeOf } from './normalise.js';
export { syncPolicies, fetchArtifactFacts, withArtifact, type SyncOptions, type SyncResult } from './sync.js';
export { snapshotHash, canonicalJson, describeChanges } from './diff.js';
export { SnapshotStore, HARBOR_SCHEMA_SQL, migrateHarbor } from './snapshot-store.js';
export { CredentialCache, type CredentialCheck, type CredentialCacheOptions } from './credentials.js';
