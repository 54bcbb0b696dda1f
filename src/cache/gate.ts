/**
 * What the cache consults before it serves content: access (private
 * projects) and policy (Harbor's pull-time rules). The cache defines the
 * question; src/harbor answers it. A registry no gate governs is served
 * as it is.
 */
export interface ClientCredentials {
  username: string;
  password: string;
}

export interface AccessRequest {
  /** The upstream registry name as configured (?ns=). */
  registry: string;
  /** Canonical repository at that registry. */
  repository: string;
  credentials: ClientCredentials | null;
}

export interface PolicyGate {
  governs(registry: string, repository: string): boolean;
  /** Throws an OciError UNAUTHORIZED (with a Basic challenge) when the client may not read this repository. */
  authorize(req: AccessRequest): Promise<void>;
  /** Throws an OciError PROJECTPOLICYVIOLATION when policy refuses this manifest. */
  checkManifest(req: AccessRequest & { digest: string }): Promise<void>;
  /** The Harbor project a repository belongs to (labels refusals an upstream made itself in /metrics). */
  locate?(registry: string, repository: string): { project: string } | null;
}
