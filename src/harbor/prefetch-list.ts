/**
 * The images Harbor marks for a site: artifacts carrying a chosen label
 * (`[harbor] prefetch_labels`), and what the projects' enabled P2P preheat
 * policies select, their repository, tag and label filters evaluated here
 * (harbor-api.md §5: an air-gapped edge pulls the policies instead of being
 * a preheat target Harbor must reach). Vulnerability and signature filters
 * are not needed: berth's policy gate refuses what Harbor would refuse.
 */
import picomatch from 'picomatch';
import type { Logger } from 'pino';
import type { HarborClient } from './client.js';
import type { HarborArtifact, HarborPreheatPolicy } from './types.js';

export interface MarkedImagesOptions {
  /** The upstream registry name berth fetches Harbor content under (e.g. "harbor.example.com"). */
  registry: string;
  projects: string[];
  labels: string[];
  preheat: boolean;
}

interface Selector {
  repo: (name: string) => boolean;
  tag: ((name: string) => boolean) | null;
  labels: string[];
}

function selector(policy: HarborPreheatPolicy): Selector {
  const value = (type: string) => policy.filters.find((f) => f.type === type)?.value;
  const repo = value('repository');
  const tag = value('tag');
  const label = value('label');
  // Harbor matches doublestar globs; "**" and "*" alike when absent.
  return {
    repo: typeof repo === 'string' && repo !== '' ? picomatch(repo, { dot: true }) : () => true,
    tag: typeof tag === 'string' && tag !== '' ? picomatch(tag, { dot: true }) : null,
    labels: typeof label === 'string' && label !== '' ? label.split(',').map((l) => l.trim()).filter(Boolean) : [],
  };
}

function references(registry: string, repository: string, a: HarborArtifact, tagOk: (t: string) => boolean): string[] {
  const tags = (a.tags ?? []).map((t) => t.name).filter(tagOk);
  if (tags.length > 0) return tags.map((t) => `${registry}/${repository}:${t}`);
  return (a.tags ?? []).length === 0 ? [`${registry}/${repository}@${a.digest}`] : [];
}

export async function markedImages(client: HarborClient, o: MarkedImagesOptions, logger: Logger): Promise<string[]> {
  const out = new Set<string>();
  const projects = o.projects.length > 0 ? o.projects : (await client.listProjects()).map((p) => p.name);
  for (const project of projects) {
    const selectors = o.preheat
      ? (await client.listPreheatPolicies(project).catch((err: unknown) => {
          logger.warn({ project, err: err instanceof Error ? err.message : String(err) }, 'cannot read preheat policies; using labels only');
          return [];
        }))
          .filter((p) => p.enabled)
          .map(selector)
      : [];
    if (o.labels.length === 0 && selectors.length === 0) continue;
    for (const repo of await client.listRepositories(project)) {
      const within = repo.name.startsWith(`${project}/`) ? repo.name.slice(project.length + 1) : repo.name;
      const candidates = selectors.filter((s) => s.repo(within));
      if (o.labels.length === 0 && candidates.length === 0) continue;
      for (const a of await client.listArtifacts(project, within, { withTag: true, withLabel: true })) {
        if (a.type !== 'IMAGE') continue;
        const names = (a.labels ?? []).map((l) => l.name);
        if (o.labels.some((l) => names.includes(l))) for (const r of references(o.registry, repo.name, a, () => true)) out.add(r);
        for (const s of candidates) {
          if (s.labels.length > 0 && !s.labels.some((l) => names.includes(l))) continue;
          for (const r of references(o.registry, repo.name, a, s.tag ?? (() => true))) out.add(r);
        }
      }
    }
  }
  return [...out].sort();
}
