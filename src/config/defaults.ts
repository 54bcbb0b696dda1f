/**
 * Every built-in default, in one frozen object, spelled as berth.toml spells
 * it ("20GiB", "5m"). The loader lays the file and the environment over these
 * and validates the result in one pass, so a default goes through exactly the
 * checks a user's value would, and `berth config` can print them as written.
 *
 * With no file at all these make a working mirror of docker.io from a checkout:
 * loopback listener, cache under ./var/berth (ignored by git).
 */
import { deepFreeze } from './freeze.js';

/** Node's process.arch in OCI platform words (the Go GOARCH names). */
const OCI_ARCH: Readonly<Record<string, string>> = {
  x64: 'amd64',
  ia32: '386',
  arm64: 'arm64',
  arm: 'arm',
  ppc64: 'ppc64le', // Node reports little-endian POWER as ppc64; images for it are ppc64le
  s390x: 's390x',
  riscv64: 'riscv64',
  loong64: 'loong64',
  mips: 'mips',
  mipsel: 'mipsle',
};

export const DEFAULTS = deepFreeze({
  /** Read when neither --config nor $BERTH_CONFIG names a file, if it exists. */
  configFile: '/etc/berth/berth.toml',
  /** Names the config file; the one BERTH_* variable that is no config key. */
  configEnv: 'BERTH_CONFIG',
  /** systemd's CacheDirectory= exports this; when set it replaces cache.dir's default. */
  cacheDirEnv: 'CACHE_DIRECTORY',

  server: {
    listen: '127.0.0.1:5050',
    drain_timeout: '30s',
    sendfile: true,
  },
  cache: {
    dir: './var/berth',
    max_size: '20GiB',
    tag_ttl: '5m',
    serve_stale: true,
    revalidate_timeout: '3s',
    prefetch_interval: '1h',
  },
  log: {
    level: 'info',
  },
  /** Public keys `berth import` requires a signature from (none: imports are not checked). */
  airgap: {
    trust: [] as string[],
  },
  /** Used only when the file has no [[upstream]] at all; a file's list replaces it. */
  upstream: [{ registry: 'docker.io', url: 'https://registry-1.docker.io' }],
  /** Keys every [[upstream]] gets unless it sets them (berth's own, beyond SPEC). */
  upstreamKeys: {
    skip_verify: false,
    connect_timeout: '5s',
    header_timeout: '30s',
    body_timeout: '60s',
  },
  /** Applied only when a [harbor] section (or a BERTH_HARBOR_* variable) exists. */
  harbor: {
    skip_verify: false,
    projects: [] as string[],
    sync_interval: '5m',
    offline_grace: '72h',
    on_expired: 'deny',
    prefetch_labels: [] as string[],
    prefetch_preheat: true,
  },
  /**
   * Applied only when a [peers] section (or a BERTH_PEERS_* key) exists; berth's
   * own tuning keys: DNS re-resolution, and how long a peer may take to connect,
   * to send its first byte, and between two body chunks before the next source is
   * tried; and how far a signed request's time may be from ours.
   */
  peers: {
    resolve_interval: '30s',
    connect_timeout: '1s',
    header_timeout: '10s',
    body_timeout: '30s',
    clock_window: '30s',
  },
  /** Keys every [[prefetch]] gets unless it sets them: the node's own platform. */
  prefetchKeys: {
    platforms: [`linux/${OCI_ARCH[process.arch] ?? process.arch}`],
  },
});
