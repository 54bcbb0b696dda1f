import type { Command } from './command.js';
import { EXIT, UsageError, out } from './command.js';
import { CONFIG_FLAG, configFrom, parse } from './common.js';
import { runDoctor } from '../host/doctor.js';
import { formatFinding, hasErrors } from '../host/findings.js';
import { berthUrlFromConfig, checkBerthUrl } from '../host/targets.js';
import { parseDuration } from '../config/units.js';

const OPTIONS = {
  ...CONFIG_FLAG,
  'containerd-config': { type: 'string' },
  'hosts-dir': { type: 'string' },
  'berth-url': { type: 'string' },
  timeout: { type: 'string' },
  json: { type: 'boolean' },
} as const;

export const doctorCommand: Command = {
  name: 'doctor',
  options: OPTIONS,
  summary: 'check this node: containerd, hosts.toml, berth, upstreams, disk, site peers',
  help: `Usage: berth doctor [--containerd-config FILE] [--hosts-dir DIR]
                   [--berth-url URL] [--timeout DURATION] [--json]

Checks what stands between a pod's image pull and berth, and prints one
line per finding:

  ok|warn|error  <what>  — fix: <how>

  - containerd: found (PATH or MicroK8s'), version 1.5+ (hosts.toml support)
  - its CRI config_path (read from /etc/containerd/config.toml, or MicroK8s'
    args/containerd.toml): set at all; not a ':'-separated list, which
    containerd 2.1+ ignores on its transfer-service pull path; no
    registry.mirrors or configs.*.tls beside it (containerd refuses those)
  - for each [[upstream]]: certs.d/<registry>/hosts.toml exists, parses and
    sends pulls to berth first
  - berth answers GET /v2/ at the URL containerd uses
  - each upstream and Harbor answer as registries (credentials accepted)
  - free disk under [cache] dir against max_size
  - with [peers]: key_file readable, at least 32 bytes, not readable by every
    user; listen is an address of this host (not loopback when the members
    are not); the members as the daemon reads them (this node among them in
    a static list); this node's own peer listener and each member answering
    a signed GET /v2/ (401: another site key, or a clock past clock_window;
    a registry that answers unsigned requests is no peer listener); each
    peer's clock from its Date header (warn past 5 s, error past clock_window)

Needs read access to containerd's config (run as root). Changes nothing.

Options:
  --config FILE              configuration file (default: $BERTH_CONFIG, else
                             /etc/berth/berth.toml if it exists, else built-in defaults)
  --containerd-config FILE   containerd's config file to read
  --hosts-dir DIR            check this hosts directory instead of config_path's
  --berth-url URL            where containerd reaches berth (default: from [server] listen)
  --timeout DURATION         per network check (default 3s)
  --json                     print {"findings":[{level,check,what,fix}],"errors":N,"warnings":N}
  -h, --help                 show this help

Exit 0 when nothing is an error, 1 when something is, 2 on bad usage or
configuration.
`,
  async run(argv) {
    const { values } = parse(argv, OPTIONS);
    const config = configFrom(values.config);
    let berthUrl: string;
    let timeoutMs = 3000;
    try {
      berthUrl = values['berth-url'] !== undefined ? checkBerthUrl(values['berth-url']) : berthUrlFromConfig(config);
      if (values.timeout !== undefined) timeoutMs = parseDuration(values.timeout);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
    if (timeoutMs <= 0) throw new UsageError('--timeout must be more than 0');
    const findings = await runDoctor({ config, berthUrl, containerdConfig: values['containerd-config'], hostsDir: values['hosts-dir'], timeoutMs });
    if (values.json) {
      const count = (level: string) => findings.filter((f) => f.level === level).length;
      out(JSON.stringify({ findings, errors: count('error'), warnings: count('warn') }, null, 2));
    } else {
      for (const f of findings) out(formatFinding(f));
    }
    return hasErrors(findings) ? EXIT.failure : EXIT.ok;
  },
};
