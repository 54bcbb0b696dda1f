/**
 * Manifest requests of the Harbor end-to-end tests: one straight to Harbor (the simulator)
 * with its token flow, for Harbor's own answer, and one through berth, to compare with it.
 */
import type { Berth } from './berth.js';

/** The Accept header these requests send unless told otherwise: OCI images and indexes. */
export const OCI_ACCEPT = 'application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json';

interface ErrorsBody {
  errors?: { code: string; message: string }[];
}

/** A manifest GET straight from Harbor, with its token flow: Harbor's own answer (its message when not 200). */
export async function harborAnswer(url: string, repo: string, ref: string, user: string, password: string, accept = OCI_ACCEPT): Promise<{ status: number; message?: string }> {
  const basic = 'Basic ' + Buffer.from(`${user}:${password}`).toString('base64');
  const tok = await fetch(`${url}/service/token?service=harbor-registry&scope=repository:${repo}:pull`, { headers: { Authorization: basic } });
  const { token } = (await tok.json()) as { token: string };
  const res = await fetch(`${url}/v2/${repo}/manifests/${ref}`, { headers: { Authorization: `Bearer ${token}`, Accept: accept } });
  const body = res.status === 200 ? undefined : ((await res.json()) as { errors: { message: string }[] }).errors[0]?.message;
  return { status: res.status, ...(body ? { message: body } : {}) };
}

export interface BerthManifestAnswer {
  status: number;
  body: Buffer;
  text: string;
  /** The body parsed as JSON; null when it is empty (a HEAD). */
  json: ErrorsBody | null;
  /** The first error's message when the status is not 200 and there is a body. */
  message?: string;
  /** Docker-Content-Digest. */
  digest: string | null;
  headers: Headers;
}

/** A manifest request through berth for `ns` (as containerd sends it); `auth` is `user:password` for Basic. */
export async function berthManifest(
  berth: Berth,
  ns: string,
  repo: string,
  ref: string,
  o: { method?: string; auth?: string; accept?: string } = {},
): Promise<BerthManifestAnswer> {
  const res = await fetch(`${berth.url}/v2/${repo}/manifests/${ref}?ns=${ns}`, {
    method: o.method ?? 'GET',
    headers: { Accept: o.accept ?? OCI_ACCEPT, ...(o.auth ? { Authorization: 'Basic ' + Buffer.from(o.auth).toString('base64') } : {}) },
  });
  const body = Buffer.from(await res.arrayBuffer());
  const text = body.toString('utf8');
  const json = text ? (JSON.parse(text) as ErrorsBody) : null;
  const message = res.status === 200 ? undefined : json?.errors?.[0]?.message;
  return { status: res.status, body, text, json, ...(message !== undefined ? { message } : {}), digest: res.headers.get('docker-content-digest'), headers: res.headers };
}
