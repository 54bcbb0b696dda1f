/**
 * Repository and artifact routes of the management API (reference §3):
 *   /projects/{p}/repositories[/{r}]
 *   /projects/{p}/repositories/{r}/artifacts[/{ref}[/tags|/accessories|/additions/{vulnerabilities|build_history}]]
 * `{r}` has had one level of percent-decoding by the router; like Harbor's handler
 * (Prepare → url.PathUnescape) we decode it once more, so `a%252Fb` names `a/b`.
 */
import { requireProject, boolParam, type ApiContext, type ProjectRef } from './api.js';
import { HarborError, type Exchange } from './http.js';
import { listHeaders, matches, pageOf, parsePage, parseQ, sortItems, type Condition } from './query.js';
import { accessoryJson, artifactJson, parseAccept, repositoryJson, vulnerabilitiesAddition } from './render.js';
import type { Artifact, HarborState, Project, Repository } from './state.js';

/** The default artifact list: tagged artifacts plus untagged ones no index references; never accessories. */
function listed(state: HarborState, repositoryName: string): Artifact[] {
  return state.artifactsIn(repositoryName).filter((a) => !a.accessory && (a.tags.length > 0 || !state.isChild(a)));
}

function repoNameParam(raw: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    throw new HarborError('BAD_REQUEST', `bad request: invalid repository name ${raw}`);
  }
}

function requireRepository(state: HarborState, p: Project, repo: string): Repository {
  const r = state.repositories.get(`${p.name}/${repo}`);
  if (!r) throw new HarborError('NOT_FOUND', `repository ${p.name}/${repo} not found`);
  return r;
}

function requireArtifact(state: HarborState, r: Repository, reference: string): Artifact {
  const art = state.resolve(r.name, reference);
  if (!art) throw new HarborError('NOT_FOUND', `artifact ${r.name}${reference.includes(':') ? '@' : ':'}${reference} not found`);
  return art;
}

function tagCondition(art: Artifact, cond: Condition): boolean {
  if (cond.kind === 'exact' && cond.value === '*') return art.tags.length > 0;
  if (cond.kind === 'exact' && cond.value === 'nil') return art.tags.length === 0;
  return art.tags.some((t) => matches(t.name, cond));
}

const ARTIFACT_FIELDS: Record<string, (a: Artifact) => string | number> = {
  type: (a) => a.type,
  media_type: (a) => a.mediaType,
  manifest_media_type: (a) => a.manifestMediaType,
  artifact_type: (a) => a.artifactType,
  digest: (a) => a.digest,
  id: (a) => a.id,
  size: (a) => a.size,
  push_time: (a) => a.pushTime.toISOString(),
};

function listArtifacts(ex: Exchange, ctx: ApiContext, r: Repository): void {
  const params = ex.url.searchParams;
  const page = parsePage(params);
  const q = parseQ(params.get('q'));
  let items = listed(ctx.state, r.name).filter((a) =>
    [...q].every(([k, cond]) => {
      if (k === 'tags') return tagCondition(a, cond);
      const get = ARTIFACT_FIELDS[k];
      return get === undefined || matches(get(a), cond);
    }),
  );
  const total = items.length;
  items = pageOf(
    sortItems(items, params.get('sort'), { push_time: (a) => a.pushTime.getTime(), id: (a) => a.id, digest: (a) => a.digest, size: (a) => a.size, type: (a) => a.type }, '-push_time,-id'),
    page,
  );
  const opts = artifactOptions(ex);
  ex.json(200, items.map((a) => artifactJson(ctx.state, a, opts)), listHeaders(ex.rawPath, params, total, page));
}

function artifactOptions(ex: Exchange): Parameters<typeof artifactJson>[2] {
  const p = ex.url.searchParams;
  return {
    withTag: boolParam(p, 'with_tag', true) ?? true,
    withLabel: boolParam(p, 'with_label', false) ?? false,
    withScanOverview: boolParam(p, 'with_scan_overview', false) ?? false,
    withAccessory: boolParam(p, 'with_accessory', false) ?? false,
    withImmutableStatus: boolParam(p, 'with_immutable_status', false) ?? false,
    accept: parseAccept(ex.header('x-accept-vulnerabilities')),
  };
}

function paged<T>(ex: Exchange, items: T[], render: (item: T) => unknown): void {
  const params = ex.url.searchParams;
  const page = parsePage(params);
  ex.json(200, pageOf(items, page).map(render), listHeaders(ex.rawPath, params, items.length, page));
}

export function routeArtifacts(ex: Exchange, ctx: ApiContext, ref: ProjectRef, rest: string[]): void {
  const { state } = ctx;
  const params = ex.url.searchParams;
  if (rest.length === 0) {
    const p = requireProject(ctx, ref, 'repository', 'list');
    const q = parseQ(params.get('q'));
    const page = parsePage(params);
    let repos = state.repositoriesOf(p).filter((r) =>
      [...q].every(([k, cond]) => (k === 'name' ? matches(r.name, cond) : k === 'id' ? matches(r.id, cond) : true)),
    );
    const total = repos.length;
    repos = pageOf(
      sortItems(repos, params.get('sort'), { name: (r) => r.name, creation_time: (r) => r.creationTime.getTime(), update_time: (r) => r.updateTime.getTime(), pull_count: (r) => r.pullCount, id: (r) => r.id }, '-creation_time,-id'),
      page,
    );
    ex.json(200, repos.map((r) => repositoryJson(r, listed(state, r.name).length)), listHeaders(ex.rawPath, params, total, page));
    return;
  }
  const repo = repoNameParam(rest[0] ?? '');
  if (rest.length === 1) {
    const p = requireProject(ctx, ref, 'repository', 'read');
    const r = requireRepository(state, p, repo);
    ex.json(200, repositoryJson(r, listed(state, r.name).length));
    return;
  }
  if (rest[1] !== 'artifacts') throw new HarborError('NOT_FOUND', `path ${ex.url.pathname} was not found`);
  if (rest.length === 2) {
    const p = requireProject(ctx, ref, 'artifact', 'list');
    listArtifacts(ex, ctx, requireRepository(state, p, repo));
    return;
  }
  const reference = rest[2] ?? '';
  const tail = rest.slice(3).join('/');
  if (tail === '') {
    const p = requireProject(ctx, ref, 'artifact', 'read');
    const art = requireArtifact(state, requireRepository(state, p, repo), reference);
    ex.json(200, artifactJson(state, art, artifactOptions(ex)));
    return;
  }
  if (tail === 'tags') {
    const p = requireProject(ctx, ref, 'tag', 'list');
    const art = requireArtifact(state, requireRepository(state, p, repo), reference);
    paged(ex, art.tags, (t) => ({ id: t.id, repository_id: art.repositoryId, artifact_id: art.id, name: t.name, push_time: t.pushTime.toISOString(), pull_time: (t.pullTime ?? new Date('0001-01-01T00:00:00Z')).toISOString() }));
    return;
  }
  if (tail === 'accessories') {
    const p = requireProject(ctx, ref, 'accessory', 'list');
    const art = requireArtifact(state, requireRepository(state, p, repo), reference);
    const q = parseQ(params.get('q'));
    const accs = state.accessoriesOf(art).filter((a) => [...q].every(([k, cond]) => (k === 'type' ? matches(a.accessory?.type, cond) : true)));
    paged(ex, accs, (a) => accessoryJson(state, a));
    return;
  }
  if (tail === 'additions/vulnerabilities') {
    const p = requireProject(ctx, ref, 'artifact-addition', 'read');
    const art = requireArtifact(state, requireRepository(state, p, repo), reference);
    ex.json(200, vulnerabilitiesAddition(state, art, parseAccept(ex.header('x-accept-vulnerabilities'))));
    return;
  }
  if (tail === 'additions/build_history') {
    const p = requireProject(ctx, ref, 'artifact-addition', 'read');
    const art = requireArtifact(state, requireRepository(state, p, repo), reference);
    ex.json(200, Array.isArray(art.extraAttrs.history) ? art.extraAttrs.history : []);
    return;
  }
  throw new HarborError('NOT_FOUND', `path ${ex.url.pathname} was not found`);
}
