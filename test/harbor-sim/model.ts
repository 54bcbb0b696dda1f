/**
 * The simulator's data model: Harbor's objects with the meanings of
 * ../../../shared/reference/harbor-api.md (projects with string metadata whose keys may
 * be missing, allowlists, robots, repositories, artifacts with tags, index references,
 * scan reports and accessories). The bookkeeping over them is state.ts.
 */

export const MIME_GENERIC_REPORT = 'application/vnd.security.vulnerability.report; version=1.1';
export const MIME_NATIVE_REPORT = 'application/vnd.scanner.adapter.vuln.report.harbor+json; version=1.0';
export const ACCESSORY_COSIGN = 'signature.cosign';
export const ACCESSORY_NOTATION = 'signature.notation';
export const SIGNATURE_TYPES: readonly string[] = [ACCESSORY_COSIGN, ACCESSORY_NOTATION];

/** Manifest media types Trivy (Harbor's default scanner) accepts: what makes an IMAGE scannable. */
export const SCANNABLE_MANIFEST_TYPES: readonly string[] = [
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
];
export const INDEX_MANIFEST_TYPES: readonly string[] = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
];

export interface Vulnerability {
  id: string;
  package: string;
  version: string;
  severity: string;
  fix_version?: string;
  description?: string;
  links?: string[];
}

export interface ScanInput {
  /** Harbor job status: 'Success', 'Running', 'Error', 'Pending', 'Scheduled', 'Stopped'. */
  status: string;
  vulnerabilities?: Vulnerability[];
  /** Report mime type (default: the generic v1.1 type current Trivy produces). */
  mimeType?: string;
}

export interface ScanReport {
  status: string;
  mimeType: string;
  vulnerabilities: Vulnerability[];
  reportId: string;
  startTime: Date;
  endTime: Date | null;
}

export interface Allowlist {
  id: number;
  projectId: number;
  items: string[];
  /** Unix seconds; null = never expires. */
  expiresAt: number | null;
  creationTime: Date;
  updateTime: Date;
}

export interface RobotAccess {
  resource: string;
  action: string;
  effect?: 'allow' | 'deny';
}

export interface RobotPermission {
  kind: 'project' | 'system';
  /** Project name, '*' (every project) or '/' (system). */
  namespace: string;
  access: RobotAccess[];
}

export interface Robot {
  id: number;
  name: string;
  secret: string;
  level: 'system' | 'project';
  permissions: RobotPermission[];
  disabled: boolean;
  /** Unix seconds; -1 = never. */
  expiresAt: number;
  creationTime: Date;
}

export type Role = 'projectAdmin' | 'maintainer' | 'developer' | 'guest';

export interface User {
  id: number;
  name: string;
  password: string;
  admin: boolean;
  /** project name -> role */
  roles: Map<string, Role>;
}

/** The registry a proxy-cache project fetches from (Harbor's registry endpoint, in simulator form). */
export interface UpstreamConfig {
  /** Base URL, e.g. a harness Distribution standing in for docker.io. */
  url: string;
  /** Harbor registry type: 'docker-hub' turns on the `library/` redirect. */
  type?: 'docker-hub' | 'docker-registry' | 'harbor';
  username?: string;
  password?: string;
}

export interface Project {
  id: number;
  name: string;
  ownerId: number;
  ownerName: string;
  creationTime: Date;
  updateTime: Date;
  metadata: Record<string, string>;
  allowlist: Allowlist;
  /** > 0: a proxy-cache project. */
  registryId: number;
  /** Where a proxy-cache project fetches from; null: none (a registryId alone only labels the project). */
  upstream: UpstreamConfig | null;
  immutableRules: unknown[];
  preheatPolicies: unknown[];
}

export interface Repository {
  id: number;
  projectId: number;
  /** Full name, project included: `library/nginx`. */
  name: string;
  creationTime: Date;
  updateTime: Date;
  pullCount: number;
}

export interface Tag {
  id: number;
  name: string;
  pushTime: Date;
  pullTime: Date | null;
}

export interface ChildReference {
  childId: number;
  childDigest: string;
  platform?: { architecture: string; os: string; variant?: string };
}

export interface AccessoryInfo {
  id: number;
  type: string;
  subjectArtifactId: number;
  creationTime: Date;
}

export interface Label {
  id: number;
  name: string;
  creationTime: Date;
}

export interface Artifact {
  id: number;
  projectId: number;
  repositoryId: number;
  repositoryName: string;
  digest: string;
  size: number;
  /** IMAGE, CNAB, CHART, UNKNOWN */
  type: string;
  /** The config media type for a manifest, the manifest's own for an index. */
  mediaType: string;
  manifestMediaType: string;
  artifactType: string;
  pushTime: Date;
  pullTime: Date | null;
  extraAttrs: Record<string, unknown>;
  annotations: Record<string, string>;
  references: ChildReference[];
  tags: Tag[];
  labelIds: number[];
  scan: ScanReport | null;
  /** Set by setScannable; undefined = derived from type and media type. */
  scannableOverride: boolean | undefined;
  /** Non-null when this artifact is an accessory (a signature) of another one. */
  accessory: AccessoryInfo | null;
}

export interface NewManifest {
  digest: string;
  size: number;
  type: string;
  mediaType: string;
  manifestMediaType: string;
  artifactType?: string;
  extraAttrs?: Record<string, unknown>;
  annotations?: Record<string, string>;
  references?: ChildReference[];
}

export interface AddProjectOptions {
  public?: boolean;
  metadata?: Record<string, string>;
  cveAllowlist?: { items: string[]; expiresAt?: number | null };
  registryId?: number;
  /** Makes it a working proxy-cache project (registryId defaults to a fresh id). */
  upstream?: UpstreamConfig;
}

export interface AddRobotOptions {
  permissions: RobotPermission[];
  disabled?: boolean;
  /** Unix seconds; -1 (default) = never. */
  expiresAt?: number;
}
