/**
 * Response helpers shared by the routes: the OCI error envelope (bodiless for
 * HEAD), and the headers every registry answer carries.
 */
import type { Context } from 'hono';
import { renderError } from '../oci/errors.js';

export const API_VERSION_HEADER = { 'Docker-Distribution-API-Version': 'registry/2.0' } as const;

export function errorResponse(c: Context, err: unknown): Response {
  const { status, body, headers } = renderError(err);
  const h: Record<string, string> = { ...API_VERSION_HEADER, ...headers };
  if (c.req.method === 'HEAD') {
    return new Response(null, { status, headers: h });
  }
  h['Content-Type'] = 'application/json; charset=utf-8';
  return new Response(JSON.stringify(body), { status, headers: h });
}
