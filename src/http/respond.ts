/**
 * Response helpers shared by the routes: the OCI error envelope (bodiless for
 * HEAD), and the headers every registry answer carries.
 */
import type { Context } from 'hono';
import { renderError } from '../oci/errors.js';

export const API_VERSION_HEADER = { 'Docker-Distribution-API-Version': 'registry/2.0' } as const;

/** What Distribution labels its JSON answers (the base, tag lists, errors) with. */
export const JSON_CONTENT_TYPE = 'application/json; charset=utf-8';

export function errorResponse(c: Context, err: unknown): Response {
  const { status, body, headers } = renderError(err);
  // A HEAD answer carries the headers a GET's would (RFC 9110 §9.3.2), without the body.
  const h: Record<string, string> = { ...API_VERSION_HEADER, ...headers, 'Content-Type': JSON_CONTENT_TYPE };
  if (c.req.method === 'HEAD') {
    return new Response(null, { status, headers: h });
  }
  return new Response(JSON.stringify(body), { status, headers: h });
}
