import type { Command } from './command.js';
import { EXIT, UsageError, out, err } from './command.js';
import { COMMON_FLAGS, configFrom, parse, withRuntime } from './common.js';
import { parseDuration } from '../config/units.js';
import { auditImage } from '../store/audit.js';

export const syncCommand: Command = {
  name: 'sync',
  options: COMMON_FLAGS,
  summary: 'one policy sync from Harbor now; prints what changed',
  help: `Usage: berth sync [--json]

Fetches the projects' policies from [harbor] (metadata, CVE allowlists with
the system one) and, for every artifact berth has cached or pinned from
Harbor, its vulnerability list, scan status and signatures. Saves the
snapshot in the index (a running daemon picks it up within a second) and
prints the bundle hash and each change since the last snapshot.
Exit 0 on success, 1 if Harbor could not be synced (the old snapshot stays).

Options:
  --json          machine-readable output
  -v, --verbose   log to stderr
  --config FILE   configuration file
  -h, --help      show this help
`,
  async run(argv) {
    const { values } = parse(argv, COMMON_FLAGS);
    const config = configFrom(values.config);
    if (!config.harbor) throw new UsageError('no [harbor] section in the configuration');
    return withRuntime(config, values.verbose === true, async (rt) => {
      try {
        const r = await rt.gate!.syncNow();
        const summary = { hash: r.hash, changed: r.changed, changes: r.changes, errors: r.errors, projects: Object.keys(r.snapshot.projects).length, artifacts: Object.keys(r.snapshot.artifacts).length, syncedAt: new Date(r.snapshot.syncedAt).toISOString() };
        if (values.json) out(JSON.stringify(summary, null, 2));
        else {
          out(`synced ${summary.projects} projects and ${summary.artifacts} artifacts from ${config.harbor!.url}`);
          out(`bundle ${r.hash}${r.changed ? '' : ' (unchanged)'}`);
          for (const c of r.changes) out(`  ${c}`);
          for (const e of r.errors) err(`  not refreshed: ${e}`);
        }
        return EXIT.ok;
      } catch (e) {
        err(`sync failed, the previous snapshot stays in force: ${e instanceof Error ? e.message : String(e)}`);
        return EXIT.failure;
      }
    });
  },
};

function parseSince(s: string, now: number): number {
  if (/^\d{4}-\d{2}-\d{2}/.test(s)) {
    const t = Date.parse(s);
    if (Number.isNaN(t)) throw new UsageError(`--since: ${JSON.stringify(s)} is not a date`);
    return t;
  }
  try {
    return now - parseDuration(s);
  } catch {
    throw new UsageError(`--since takes a duration ("24h", "7d") or a date ("2026-11-25T10:00:00Z"), not ${JSON.stringify(s)}`);
  }
}

const AUDIT_OPTIONS = { ...COMMON_FLAGS, since: { type: 'string' }, limit: { type: 'string' } } as const;

export const auditCommand: Command = {
  name: 'audit',
  options: AUDIT_OPTIONS,
  summary: 'list the audit record of manifest requests',
  help: `Usage: berth audit [--since D] [--limit N] [--json]

Lists every manifest request berth recorded: time, registry, repository,
reference, digest, decision (cache, filled, stale, refused, unauthorized,
not_found, error) and why, client address, and the user name of any
credentials presented (never the secret). The record keeps 30 days and at
most 200 000 requests.

Options:
  --since D       a duration back from now ("24h", "7d") or a date (default 24h)
  --limit N       the newest N entries of the period (default 1000); stderr
                  says how many older ones were not listed
  --json          machine-readable output
  -v, --verbose   log to stderr
  --config FILE   configuration file
  -h, --help      show this help
`,
  async run(argv) {
    const { values } = parse(argv, AUDIT_OPTIONS);
    const config = configFrom(values.config);
    const since = parseSince(values.since ?? '24h', Date.now());
    const limit = values.limit === undefined ? 1000 : Number(values.limit);
    if (!Number.isInteger(limit) || limit < 1) throw new UsageError('--limit takes a whole number above 0');
    return withRuntime(config, values.verbose === true, async (rt) => {
      const rows = rt.index.audit.since(since, limit);
      // The newest `limit` entries are listed; say so when older ones in the period were left out.
      const left = rows.length < limit ? 0 : rt.index.audit.count(since) - rows.length;
      if (left > 0) err(`${left} older ${left === 1 ? 'entry' : 'entries'} in that period not listed (--limit ${limit}; narrow --since or raise --limit)`);
      if (values.json) {
        out(JSON.stringify(rows.map((r) => ({ ...r, at: new Date(r.at).toISOString() })), null, 2));
        return EXIT.ok;
      }
      for (const r of rows) {
        const who = [r.client, r.username ? `user=${r.username}` : null].filter(Boolean).join(' ');
        const digest = r.digest ? ` ${r.digest.slice(0, 19)}` : '';
        out(`${new Date(r.at).toISOString()}  ${r.decision.padEnd(12)} ${r.method.padEnd(4)} ${auditImage(r)}${digest}  ${who}${r.reason ? `  ${r.reason}` : ''}`);
      }
      if (rows.length === 0) out('no manifest requests recorded in that period');
      return EXIT.ok;
    });
  },
};
