import path from 'node:path';
import type { Command } from './command.js';
import { EXIT, UsageError, err, out } from './command.js';
import { CONFIG_FLAG, ConfigError, configFrom, parse } from './common.js';
import { applyPlan, planConfigure, planUndo, BACKUP_SUFFIX, type FileChange, type Plan } from '../host/certs-dir.js';
import { unifiedDiff } from '../host/diff.js';
import { HostsTomlError } from '../host/hosts-toml.js';
import { berthUrlFromConfig, checkBerthUrl, resolveHostsDir } from '../host/targets.js';

const OPTIONS = {
  ...CONFIG_FLAG,
  'hosts-dir': { type: 'string' },
  microk8s: { type: 'boolean' },
  'berth-url': { type: 'string' },
  'no-fallback': { type: 'boolean' },
  ca: { type: 'string' },
  'dry-run': { type: 'boolean' },
  undo: { type: 'boolean' },
} as const;

const VERB: Record<FileChange['kind'], string> = {
  create: 'created',
  update: 'updated',
  unchanged: 'unchanged',
  restore: 'restored',
  remove: 'removed',
  skip: 'skipped',
};

function report(plan: Plan, dryRun: boolean): void {
  if (plan.changes.length === 0) {
    out(`nothing to do in ${plan.hostsDir}`);
    return;
  }
  for (const c of plan.changes) {
    if (dryRun) {
      const diff = unifiedDiff(`a/${c.registry}/hosts.toml`, `b/${c.registry}/hosts.toml`, c.before, c.after);
      out(`# ${c.registry}: would be ${VERB[c.kind]} (${c.file})`);
      if (diff !== '') out(diff.trimEnd());
    } else {
      const backup = c.kind === 'restore' ? ` from ${path.basename(c.file)}${BACKUP_SUFFIX}` : '';
      out(`${c.registry}: ${VERB[c.kind]} ${c.file}${backup}`);
    }
    for (const n of c.notes) out(`  ${n}`);
  }
  if (dryRun) out('(dry run: nothing written)');
}

export const configureCommand: Command = {
  name: 'configure',
  options: OPTIONS,
  summary: "point containerd at berth: write certs.d/<registry>/hosts.toml (root)",
  help: `Usage: berth configure containerd [--hosts-dir DIR | --microk8s] [--no-fallback]
                                [--berth-url URL] [--ca FILE] [--dry-run] [--undo]

Writes one hosts.toml per [[upstream]] registry into containerd's hosts
directory so that containerd asks berth first. Files already there are
edited, not replaced: other hosts (MicroK8s' registry-1.docker.io, a site
mirror) stay, after berth; the upstream stays containerd's fallback
\`server\`. Before the first change to a file the original is kept next to
it as hosts.toml${BACKUP_SUFFIX} (a file berth creates is marked instead).
Running it again changes nothing. containerd picks changes up without a
restart. Registries that left the config are restored.

The hosts directory: --hosts-dir, else MicroK8s' /var/snap/microk8s/current/args/certs.d
when it exists (or --microk8s), else /etc/containerd/certs.d. containerd's
CRI reads it only if its config_path names it: \`berth doctor\` checks that.

Options:
  --config FILE     configuration file (default: $BERTH_CONFIG, else
                    /etc/berth/berth.toml if it exists, else built-in defaults)
  --hosts-dir DIR   containerd's hosts directory (its config_path)
  --microk8s        use MicroK8s' hosts directory
  --berth-url URL   how containerd reaches berth (default: from [server] listen,
                    https when tls_cert_file is set; e.g. a DaemonSet's node IP)
  --no-fallback     berth becomes \`server\` and the only host, so a pull berth
                    refuses cannot go to the registry instead (policy
                    enforcement needs this); other hosts are removed
  --ca FILE         CA file containerd uses to verify an HTTPS berth
  --dry-run         print what would change as a diff; write nothing
  --undo            put back every file as it was before berth, byte for byte
  -h, --help        show this help

Exit 0 when done, 1 when a file cannot be read, merged or written, 2 on bad
usage or configuration.
`,
  async run(argv) {
    const { values, positionals } = parse(argv, OPTIONS, true);
    if (positionals.length !== 1 || positionals[0] !== 'containerd') {
      throw new UsageError(positionals.length === 0 ? 'say what to configure: berth configure containerd' : `cannot configure ${JSON.stringify(positionals.join(' '))}: only "containerd"`);
    }
    if (values['hosts-dir'] !== undefined && values.microk8s) throw new UsageError('--hosts-dir and --microk8s name the directory twice: give one');
    if (values.undo && (values['no-fallback'] || values['berth-url'] !== undefined || values.ca !== undefined)) {
      throw new UsageError('--undo restores the originals; it takes no --no-fallback, --berth-url or --ca');
    }
    const hostsDir = resolveHostsDir({ hostsDir: values['hosts-dir'], microk8s: values.microk8s }).dir;
    const dryRun = values['dry-run'] ?? false;

    let plan: Plan;
    try {
      if (values.undo) {
        plan = await planUndo(hostsDir);
      } else {
        const config = configFrom(values.config);
        let berthUrl: string;
        try {
          berthUrl = values['berth-url'] !== undefined ? checkBerthUrl(values['berth-url']) : berthUrlFromConfig(config);
        } catch (e) {
          throw new UsageError((e as Error).message);
        }
        if (berthUrl.startsWith('https:') && values.ca === undefined) {
          err('berth configure: berth serves HTTPS; unless its certificate is signed by a CA the node already trusts, pass --ca FILE (the CA that signed tls_cert_file) so containerd can verify it');
        }
        plan = await planConfigure({
          hostsDir,
          targets: config.upstreams.map((u) => ({ registry: u.registry, upstreamUrl: u.url, ...(u.caFile !== undefined ? { upstreamCa: u.caFile } : {}) })),
          berthUrl,
          noFallback: values['no-fallback'] ?? false,
          ...(values.ca !== undefined ? { ca: path.resolve(values.ca) } : {}),
        });
      }
      if (!dryRun) await applyPlan(plan);
    } catch (e) {
      if (e instanceof UsageError || e instanceof ConfigError) throw e;
      const hint = (e as NodeJS.ErrnoException).code === 'EACCES' ? ' (run as root: sudo berth configure containerd)' : '';
      err(`berth configure: ${e instanceof HostsTomlError ? `cannot merge into ${e.message}; nothing was changed` : (e as Error).message}${hint}`);
      return EXIT.failure;
    }
    report(plan, dryRun);
    return plan.changes.some((c) => c.kind === 'skip') ? EXIT.failure : EXIT.ok;
  },
};
