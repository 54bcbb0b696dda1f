/**
 * What containerd on this node will do with hosts.toml: its version, and the
 * CRI registry settings of its config file (the pulls Kubernetes makes go
 * through CRI, which reads certs.d only when `config_path` says so).
 *
 * Config file versions name the CRI registry table differently:
 *   version 3 (containerd 2.x)  [plugins."io.containerd.cri.v1.images".registry]
 *   version 2 (containerd 1.x)  [plugins."io.containerd.grpc.v1.cri".registry]
 *   version 1 / none            [plugins.cri.registry]
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { parse } from 'smol-toml';
import { finding, type Finding } from './findings.js';

export interface ContainerdVersion {
  text: string;
  major: number;
  minor: number;
  patch: number;
}

/** MicroK8s ships its own containerd, not on PATH. */
export const MICROK8S_CONTAINERD_BIN = '/snap/microk8s/current/bin/containerd';
export const MICROK8S_ARGS = '/var/snap/microk8s/current/args';
export const PLAIN_CONFIG = '/etc/containerd/config.toml';
/** containerd 2.x's built-in config_path when the file sets none. */
export const V2_DEFAULT_CONFIG_PATH = '/etc/containerd/certs.d:/etc/docker/certs.d';

/** `containerd --version`: "containerd github.com/containerd/containerd 1.6.20~ds1 …" or "… /v2 v2.1.4 75cb2b7…". */
export function parseContainerdVersion(output: string): ContainerdVersion | null {
  const words = output.trim().split(/\s+/);
  for (const w of [words[2] ?? '', ...words]) {
    const m = /^v?(\d+)\.(\d+)\.(\d+)/.exec(w);
    if (m) return { text: w, major: Number(m[1]), minor: Number(m[2]), patch: Number(m[3]) };
  }
  return null;
}

export function atLeast(v: ContainerdVersion, major: number, minor: number): boolean {
  return v.major > major || (v.major === major && v.minor >= minor);
}

export interface DetectedContainerd {
  bin: string;
  raw: string;
  version: ContainerdVersion | null;
}

function versionOf(bin: string, timeoutMs: number): Promise<DetectedContainerd | null> {
  return new Promise((resolve) => {
    execFile(bin, ['--version'], { timeout: timeoutMs }, (err, stdout) => {
      if (err) resolve(null);
      else resolve({ bin, raw: stdout.trim(), version: parseContainerdVersion(stdout) });
    });
  });
}

/** The first containerd that answers `--version`: the one on PATH, else MicroK8s'. */
export async function detectContainerd(bins: readonly string[] = ['containerd', MICROK8S_CONTAINERD_BIN], timeoutMs = 5000): Promise<DetectedContainerd | null> {
  for (const bin of bins) {
    const found = await versionOf(bin, timeoutMs);
    if (found) return found;
  }
  return null;
}

export interface ContainerdSite {
  /** The file containerd reads. */
  file: string;
  /** The file an operator edits (on MicroK8s the template that containerd.toml is rendered from). */
  editFile: string;
  /** How changes to it take effect. */
  restart: string;
  /** Placeholders the file may hold (MicroK8s' ${SNAP_DATA}). */
  substitutions: Readonly<Record<string, string>>;
}

const MICROK8S_SUBST = {
  '${SNAP_DATA}': '/var/snap/microk8s/current',
  '${SNAP_COMMON}': '/var/snap/microk8s/common',
  '${SNAP}': '/snap/microk8s/current',
};

/** --containerd-config FILE, else MicroK8s' files when present, else /etc/containerd/config.toml; null when none exists. */
export function locateContainerdConfig(explicit?: string, exists: (p: string) => boolean = existsSync): ContainerdSite | null {
  if (explicit !== undefined && explicit !== '') {
    const micro = explicit.startsWith(MICROK8S_ARGS);
    return { file: explicit, editFile: explicit, restart: micro ? 'sudo snap restart microk8s' : 'sudo systemctl restart containerd', substitutions: micro ? MICROK8S_SUBST : {} };
  }
  const rendered = `${MICROK8S_ARGS}/containerd.toml`;
  const template = `${MICROK8S_ARGS}/containerd-template.toml`;
  if (exists(rendered) || exists(template)) {
    return { file: exists(rendered) ? rendered : template, editFile: template, restart: 'sudo snap restart microk8s', substitutions: MICROK8S_SUBST };
  }
  if (exists(PLAIN_CONFIG)) return { file: PLAIN_CONFIG, editFile: PLAIN_CONFIG, restart: 'sudo systemctl restart containerd', substitutions: {} };
  return null;
}

export interface RegistrySettings {
  configVersion: number;
  /** The CRI plugin is listed in disabled_plugins: Kubernetes does not pull through this containerd. */
  criDisabled: boolean;
  /** config_path as written (placeholders substituted); undefined when the file sets none. */
  configPath: string | undefined;
  /** The TOML table that holds config_path for this config version, for fix texts. */
  registryTable: string;
  /** Registries under the deprecated registry.mirrors. */
  mirrors: string[];
  /** Registries with registry.configs.<r>.tls (refused together with config_path). */
  tlsConfigs: string[];
  /** containerd 2.x: pull in the CRI process rather than through the transfer service. */
  useLocalImagePull: boolean | undefined;
}

type Table = Record<string, unknown>;
const asTable = (v: unknown): Table | undefined => (typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Table) : undefined);

const TABLES: Record<number, { plugin: string; label: string }> = {
  3: { plugin: 'io.containerd.cri.v1.images', label: `[plugins."io.containerd.cri.v1.images".registry]` },
  2: { plugin: 'io.containerd.grpc.v1.cri', label: `[plugins."io.containerd.grpc.v1.cri".registry]` },
  1: { plugin: 'cri', label: '[plugins.cri.registry]' },
};

export function readRegistrySettings(text: string, file: string, substitutions: Readonly<Record<string, string>> = {}): RegistrySettings {
  let doc: Table;
  try {
    doc = parse(text) as Table;
  } catch (e) {
    throw new Error(`${file}: not valid TOML (${(e as Error).message.split('\n')[0]})`);
  }
  const configVersion = typeof doc.version === 'number' ? doc.version : 1;
  const plugins = asTable(doc.plugins) ?? {};
  const disabled = Array.isArray(doc.disabled_plugins) ? doc.disabled_plugins.map(String) : [];
  const own = TABLES[configVersion] ?? TABLES[2]!;
  // A file may still use an older table name; containerd migrates it, so look at every spelling, own version first.
  const order = [own, ...Object.values(TABLES).filter((t) => t !== own)];
  let registry: Table | undefined;
  for (const t of order) {
    registry = asTable(asTable(plugins[t.plugin])?.registry);
    if (registry) break;
  }
  let configPath = typeof registry?.config_path === 'string' && registry.config_path !== '' ? registry.config_path : undefined;
  for (const [from, to] of Object.entries(substitutions)) configPath = configPath?.split(from).join(to);
  const images = asTable(plugins['io.containerd.cri.v1.images']);
  const configs = asTable(registry?.configs) ?? {};
  return {
    configVersion,
    criDisabled: disabled.includes('io.containerd.grpc.v1.cri') || disabled.includes('cri') || disabled.includes('io.containerd.cri.v1.images'),
    configPath,
    registryTable: own.label,
    mirrors: Object.keys(asTable(registry?.mirrors) ?? {}),
    tlsConfigs: Object.entries(configs)
      .filter(([, v]) => asTable(v)?.tls !== undefined)
      .map(([k]) => k),
    useLocalImagePull: typeof images?.use_local_image_pull === 'boolean' ? images.use_local_image_pull : undefined,
  };
}

export interface Analysis {
  findings: Finding[];
  /** The directories containerd's CRI searches for <registry>/hosts.toml, in order (empty: none). */
  dirs: string[];
}

/** Findings about config_path, given the version (null when unknown) and where the file lives. */
export function analyzeRegistrySettings(s: RegistrySettings, version: ContainerdVersion | null, site: ContainerdSite, berthDir: string): Analysis {
  const where = `in ${site.editFile}`;
  const apply = `then ${site.restart}`;
  if (s.criDisabled) {
    return {
      findings: [finding('warn', 'containerd.cri', `the CRI plugin is disabled in ${site.file}: Kubernetes does not pull through this containerd; only clients given --hosts-dir (ctr, nerdctl) read certs.d`, 'none needed unless this node runs Kubernetes pods')],
      dirs: [],
    };
  }
  const findings: Finding[] = [];
  const v2 = version !== null && version.major >= 2;
  let configPath = s.configPath;
  let defaulted = false;
  if (configPath === undefined && v2) {
    configPath = V2_DEFAULT_CONFIG_PATH;
    defaulted = true;
  }
  const setIt = `set config_path = "${berthDir}" under ${s.registryTable} ${where}, ${apply}`;

  if (s.mirrors.length > 0) {
    findings.push(
      finding(
        'error',
        'containerd.mirrors',
        s.configPath !== undefined
          ? `${site.file} sets both config_path and registry.mirrors (${s.mirrors.join(', ')}): containerd refuses to load its CRI plugin ("\`mirrors\` cannot be set when \`config_path\` is provided")`
          : `${site.file} uses the deprecated registry.mirrors (${s.mirrors.join(', ')}): containerd ignores certs.d/*/hosts.toml`,
        `delete the [${s.registryTable.slice(1, -1)}.mirrors] tables (put each mirror in certs.d/<registry>/hosts.toml instead) and ${setIt}`,
      ),
    );
  }
  if (s.configPath !== undefined && s.tlsConfigs.length > 0) {
    findings.push(
      finding('error', 'containerd.configs_tls', `${site.file} sets registry.configs.*.tls (${s.tlsConfigs.join(', ')}) together with config_path: containerd refuses to load its CRI plugin`, `move each TLS setting (ca, skip_verify, client) into certs.d/<registry>/hosts.toml ${where}, ${apply}`),
    );
  }
  if (configPath === undefined) {
    if (s.mirrors.length === 0) {
      findings.push(finding('error', 'containerd.config_path', `config_path is not set in ${site.file}: containerd's CRI (the pulls Kubernetes makes) ignores certs.d`, setIt));
    }
    return { findings, dirs: [] };
  }

  const dirs = configPath.split(':').filter((d) => d !== '');
  const shown = `config_path = "${configPath}"${defaulted ? " (containerd 2's default)" : ''} in ${site.file}`;
  if (dirs.length > 1) {
    const localPull = s.useLocalImagePull === true;
    const fix = `set config_path = "${dirs.includes(berthDir) ? berthDir : dirs[0]}" (one directory) under ${s.registryTable}, or use_local_image_pull = true under [plugins."io.containerd.cri.v1.images"], ${where}; ${apply}`;
    if (localPull) {
      findings.push(finding('ok', 'containerd.config_path', `${shown}: a list, read by the local pull path (use_local_image_pull = true)`));
    } else if (version !== null && atLeast(version, 2, 1)) {
      findings.push(finding('error', 'containerd.config_path', `${shown} is a ':'-separated list: containerd ${version.text} pulls through its transfer service, which takes the whole list as one directory and ignores every hosts.toml`, fix));
    } else {
      const which = version === null ? 'this containerd (version unknown)' : `containerd ${version.text}`;
      findings.push(finding('warn', 'containerd.config_path', `${shown} is a ':'-separated list: ${which} reads it, but containerd 2.1+ ignores it on its transfer-service pull path`, fix));
    }
  } else {
    findings.push(finding('ok', 'containerd.config_path', shown));
  }
  return { findings, dirs };
}
