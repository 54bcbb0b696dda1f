/**
 * The §12 policy chain against the §11 D scenario list, with Harbor's exact
 * message texts spelled out here in full (from vulnerable.go and
 * contentrust.go) so a drift in policy.ts shows as a string diff.
 */
import t from 'tap';
import { evaluate, effectiveAllowlist, isAllowlistExpired, projectEnforces } from '../../src/harbor/policy.js';
import { normaliseProject, parseSeverityVersion3, severityCode, isTrue, artifactFacts, signatureTypeOf } from '../../src/harbor/normalise.js';
import { decide } from '../../src/harbor/enforce.js';
import { REPORT_MIME, artifactKey, splitHarborName, type ArtifactPolicyFacts, type CveAllowlist, type PolicySnapshot, type ProjectPolicy, type Vulnerability } from '../../src/harbor/types.js';

const NOW = Date.UTC(2026, 7, 21, 12, 0, 0); // ms
const NOW_S = Math.floor(NOW / 1000);
const NO_LIST: CveAllowlist = { items: [], expiresAt: null };
const D = 'sha256:' + 'a'.repeat(64);

function project(metadata: Record<string, string>, allowlist?: { items: string[]; expires_at?: number | null }): ProjectPolicy {
  return normaliseProject({
    project_id: 7,
    name: 'edge',
    metadata,
    ...(allowlist ? { cve_allowlist: { items: allowlist.items.map((cve_id) => ({ cve_id })), expires_at: allowlist.expires_at ?? null } } : {}),
  });
}

function facts(over: Partial<ArtifactPolicyFacts> = {}): ArtifactPolicyFacts {
  return {
    project: 'edge',
    repository: 'app',
    digest: D,
    type: 'IMAGE',
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    isIndex: false,
    scannable: true,
    scanStatus: 'Success',
    vulnerabilities: [],
    accessories: [],
    isSignature: false,
    ...over,
  };
}

let n = 0;
function vuln(severity: string, id = `CVE-2026-${1000 + n++}`, pkg = 'openssl', version = '3.0.11'): Vulnerability {
  return { id, package: pkg, version, severity };
}

const policyIn = (sev: string): string => `configured policy in 'Prevent images with vulnerability severity of "${sev}" or higher from running.'`;
const vulnMsg = (count: string, sev: string): string =>
  `current image with ${count} cannot be pulled due to ${policyIn(sev)} To continue with pull, please contact your project administrator to exempt matched vulnerabilities through configuring the CVE allowlist.`;
const noScanMsg = (sev: string): string =>
  `current image without vulnerability scanning cannot be pulled due to ${policyIn(sev)} To continue with pull, please contact your project administrator for help.`;
const statusMsg = (status: string, sev: string): string =>
  `current image with "${status}" status of vulnerability scanning cannot be pulled due to ${policyIn(sev)} To continue with pull, please contact your project administrator for help.`;

const vul = (severity: string): Record<string, string> => ({ prevent_vul: 'true', severity });

t.test('metadata defaults and parsers are Harbor\'s (§1 table)', async (t) => {
  const bare = project({});
  t.same(
    { ...bare, projectAllowlist: undefined },
    {
      name: 'edge',
      projectId: 7,
      public: false,
      registryId: 0,
      preventVul: false,
      severity: 'Unknown',
      severityThreshold: 0,
      contentTrustCosign: false,
      contentTrustNotation: false,
      reuseSysAllowlist: true,
      projectAllowlist: undefined,
    },
    'every key missing: Go getters\' defaults, reuse_sys_cve_allowlist true',
  );
  t.same(bare.projectAllowlist, NO_LIST);
  t.equal(project({ reuse_sys_cve_allowlist: 'false' }).reuseSysAllowlist, false);
  t.equal(project({ reuse_sys_cve_allowlist: '' }).reuseSysAllowlist, false, 'present but not true: the project list');
  t.equal(project({ reuse_sys_cve_allowlist: '1' }).reuseSysAllowlist, true);
  t.equal(project({ prevent_vul: 'TRUE', public: '1', enable_content_trust: 'True', enable_content_trust_cosign: 'yes' }).preventVul, true);
  const p = project({ public: '1', enable_content_trust: 'True', enable_content_trust_cosign: 'yes' });
  t.same([p.public, p.contentTrustNotation, p.contentTrustCosign], [true, true, false], 'isTrue: "true"/"1" any case, nothing else');
  t.same([isTrue(undefined), isTrue('0'), isTrue('false'), isTrue('1')], [false, false, false, true]);
  t.equal(normaliseProject({ project_id: 2, name: 'hub', registry_id: 3 }).registryId, 3);

  t.same(
    ['none', 'low', 'medium', 'high', 'critical', 'negligible', '', 'unknown', 'HIGH', 'bogus'].map(parseSeverityVersion3),
    ['None', 'Low', 'Medium', 'High', 'Critical', 'None', 'Unknown', 'Unknown', 'Unknown', 'Unknown'],
    'strings.Title then exact names: "HIGH" is not High',
  );
  t.same(
    ['None', 'Unknown', 'Negligible', 'Low', 'Medium', 'High', 'Critical', 'critical', '', 'Severe'].map(severityCode),
    [0, 0, 1, 2, 3, 4, 5, 99, 99, 99],
  );
  t.same(project(vul('high')).severityThreshold, 4);
  t.same(project({}, { items: ['CVE-2', 'CVE-1', 'CVE-2'], expires_at: 5 }).projectAllowlist, { items: ['CVE-1', 'CVE-2'], expiresAt: 5 });
});

t.test('prevent_vul with each severity threshold', async (t) => {
  t.test('none: any remaining CVE blocks, even a None or Negligible one', async (t) => {
    const p = project(vul('none'));
    t.same(evaluate(p, facts({ vulnerabilities: [vuln('Negligible')] }), NO_LIST, NOW), { allow: false, reason: 'vuln-severity', message: vulnMsg('1 vulnerability', 'None') });
    t.equal(evaluate(p, facts({ vulnerabilities: [vuln('Unknown')] }), NO_LIST, NOW).allow, false, 'code 0 >= threshold 0');
    t.same(evaluate(p, facts({ vulnerabilities: [] }), NO_LIST, NOW), { allow: true }, 'a clean image pulls');
  });
  t.test('missing severity parses as Unknown (code 0) and is printed so', async (t) => {
    const p = project({ prevent_vul: 'true' });
    t.same(evaluate(p, facts({ vulnerabilities: [vuln('Low')] }), NO_LIST, NOW), { allow: false, reason: 'vuln-severity', message: vulnMsg('1 vulnerability', 'Unknown') });
  });
  t.test('low', async (t) => {
    const p = project(vul('low'));
    t.same(evaluate(p, facts({ vulnerabilities: [vuln('Negligible'), vuln('Unknown')] }), NO_LIST, NOW), { allow: true });
    t.same(evaluate(p, facts({ vulnerabilities: [vuln('Negligible'), vuln('Low')] }), NO_LIST, NOW), {
      allow: false,
      reason: 'vuln-severity',
      message: vulnMsg('2 vulnerabilities', 'Low'),
    });
  });
  t.test('high: N counts every remaining CVE, not only those at or above the threshold', async (t) => {
    const p = project(vul('high'));
    t.same(evaluate(p, facts({ vulnerabilities: [vuln('Medium'), vuln('Medium'), vuln('Low')] }), NO_LIST, NOW), { allow: true });
    t.same(evaluate(p, facts({ vulnerabilities: [vuln('Low'), vuln('Medium'), vuln('High')] }), NO_LIST, NOW), {
      allow: false,
      reason: 'vuln-severity',
      message: vulnMsg('3 vulnerabilities', 'High'),
    });
  });
  t.test('critical', async (t) => {
    const p = project(vul('critical'));
    t.same(evaluate(p, facts({ vulnerabilities: [vuln('High'), vuln('High')] }), NO_LIST, NOW), { allow: true });
    t.same(evaluate(p, facts({ vulnerabilities: [vuln('Critical')] }), NO_LIST, NOW), { allow: false, reason: 'vuln-severity', message: vulnMsg('1 vulnerability', 'Critical') });
  });
  t.test('an unrecognised severity ranks 99 and blocks at any threshold', async (t) => {
    const p = project(vul('critical'));
    t.equal(evaluate(p, facts({ vulnerabilities: [vuln('Severe')] }), NO_LIST, NOW).allow, false);
    t.equal(evaluate(p, facts({ vulnerabilities: [vuln('critical')] }), NO_LIST, NOW).allow, false, 'names are case-sensitive in reports');
    t.equal(evaluate(p, facts({ vulnerabilities: [vuln('')] }), NO_LIST, NOW).allow, false, 'empty fails closed');
  });
  t.test('"negligible" threshold is None; "HIGH" is Unknown', async (t) => {
    t.match(evaluate(project(vul('negligible')), facts({ vulnerabilities: [vuln('Low')] }), NO_LIST, NOW), { allow: false, message: /"None"/ });
    t.match(evaluate(project(vul('HIGH')), facts({ vulnerabilities: [vuln('Low')] }), NO_LIST, NOW), { allow: false, message: /"Unknown"/ });
  });
  t.test('duplicates by id-package-version count once; the same CVE in two packages twice', async (t) => {
    const p = project(vul('low'));
    const dup = [vuln('High', 'CVE-1', 'a', '1'), vuln('High', 'CVE-1', 'a', '1'), vuln('High', 'CVE-1', 'b', '1'), vuln('High', 'CVE-1', 'a', '2')];
    t.same(evaluate(p, facts({ vulnerabilities: dup }), NO_LIST, NOW), { allow: false, reason: 'vuln-severity', message: vulnMsg('3 vulnerabilities', 'Low') });
  });
  t.test('prevent_vul off: vulnerable images pull', async (t) => {
    t.same(evaluate(project({ severity: 'low' }), facts({ vulnerabilities: [vuln('Critical')] }), NO_LIST, NOW), { allow: true });
    t.same(evaluate(project({ prevent_vul: 'false', severity: 'low' }), facts({ scanStatus: null }), NO_LIST, NOW), { allow: true });
  });
});

t.test('CVE allowlists', async (t) => {
  const a = vuln('Critical', 'CVE-A');
  const b = vuln('High', 'CVE-B');
  const c = vuln('Low', 'CVE-C');

  t.test('a list covering every CVE at or above the threshold lets the image through', async (t) => {
    const sys: CveAllowlist = { items: ['CVE-A', 'CVE-B'], expiresAt: null };
    t.same(evaluate(project(vul('high')), facts({ vulnerabilities: [a, b, c] }), sys, NOW), { allow: true });
    t.same(
      evaluate(project(vul('low')), facts({ vulnerabilities: [a, b, c] }), sys, NOW),
      { allow: false, reason: 'vuln-severity', message: vulnMsg('1 vulnerability', 'Low') },
      'the remaining one still counts at a lower threshold',
    );
    t.same(evaluate(project(vul('none')), facts({ vulnerabilities: [a, b] }), sys, NOW), { allow: true }, 'all covered');
  });

  t.test('reuse_sys_cve_allowlist absent: the system list, the project\'s own ignored', async (t) => {
    const p = project(vul('low'), { items: ['CVE-A', 'CVE-B'] });
    const sys: CveAllowlist = { items: ['CVE-A'], expiresAt: null };
    t.same(evaluate(p, facts({ vulnerabilities: [a, b] }), sys, NOW), { allow: false, reason: 'vuln-severity', message: vulnMsg('1 vulnerability', 'Low') });
    t.same([...effectiveAllowlist(p, sys, NOW)], ['CVE-A']);
  });

  t.test('reuse_sys_cve_allowlist "false": the project list alone, never merged', async (t) => {
    const p = project({ ...vul('low'), reuse_sys_cve_allowlist: 'false' }, { items: ['CVE-B'] });
    const sys: CveAllowlist = { items: ['CVE-A'], expiresAt: null };
    t.same(evaluate(p, facts({ vulnerabilities: [a, b] }), sys, NOW), { allow: false, reason: 'vuln-severity', message: vulnMsg('1 vulnerability', 'Low') });
    t.same([...effectiveAllowlist(p, sys, NOW)], ['CVE-B']);
    t.same(evaluate(p, facts({ vulnerabilities: [b] }), sys, NOW), { allow: true });
    t.same(evaluate(p, facts({ vulnerabilities: [a] }), sys, NOW).allow, false, 'the system list does not help');
  });

  t.test('an expired list is ignored entirely, judged with the clock at pull time', async (t) => {
    const p = project({ ...vul('high'), reuse_sys_cve_allowlist: 'false' }, { items: ['CVE-A'], expires_at: NOW_S });
    t.same(evaluate(p, facts({ vulnerabilities: [a] }), NO_LIST, NOW), { allow: false, reason: 'vuln-severity', message: vulnMsg('1 vulnerability', 'High') }, 'now == expires_at is expired');
    t.same(evaluate(p, facts({ vulnerabilities: [a] }), NO_LIST, NOW - 1000), { allow: true }, 'a second earlier it still applied');
    const sys: CveAllowlist = { items: ['CVE-A'], expiresAt: NOW_S + 3600 };
    t.same(evaluate(project(vul('high')), facts({ vulnerabilities: [a] }), sys, NOW), { allow: true });
    t.equal(evaluate(project(vul('high')), facts({ vulnerabilities: [a] }), sys, NOW + 3600_000).allow, false, 'expires while offline');
    t.equal(isAllowlistExpired({ items: [], expiresAt: null }, Number.MAX_SAFE_INTEGER), false, 'null never expires');
    t.equal(isAllowlistExpired({ items: [], expiresAt: 0 }, NOW), true);
  });
});

t.test('scan status and reports', async (t) => {
  const p = project(vul('critical'));
  for (const status of ['Running', 'Error', 'Pending', 'Scheduled', 'Stopped']) {
    t.same(evaluate(p, facts({ scanStatus: status }), NO_LIST, NOW), { allow: false, reason: 'vuln-scan-status', message: statusMsg(status, 'Critical') }, status);
  }
  t.same(evaluate(p, facts({ scanStatus: null }), NO_LIST, NOW), { allow: false, reason: 'vuln-not-scanned', message: noScanMsg('Critical') }, 'no report on a scannable artifact');
  t.same(evaluate(p, facts({ scanStatus: null, scannable: false }), NO_LIST, NOW), { allow: true }, 'no report, not scannable');
  t.same(evaluate(p, facts({ scanStatus: 'Error', scannable: false }), NO_LIST, NOW), { allow: true }, 'not scannable is decided before the report');
});

t.test('image indexes', async (t) => {
  const p = project(vul('low'));
  const index = { isIndex: true, mediaType: 'application/vnd.oci.image.index.v1+json' };
  t.same(evaluate(p, facts({ ...index, vulnerabilities: [vuln('Critical')] }), NO_LIST, NOW), { allow: true }, 'IMAGE index: children are checked on their own pulls');
  t.same(evaluate(p, facts({ ...index, type: 'CNAB', scanStatus: 'Running' }), NO_LIST, NOW), { allow: true }, 'CNAB index, before the status check');
  t.same(evaluate(p, facts({ ...index, scanStatus: null }), NO_LIST, NOW), { allow: false, reason: 'vuln-not-scanned', message: noScanMsg('Low') }, 'but an index without any report blocks');
  t.equal(evaluate(p, facts({ ...index, type: 'UNKNOWN', vulnerabilities: [vuln('High')] }), NO_LIST, NOW).allow, false, 'other index types are judged');
  t.equal(evaluate(p, facts({ vulnerabilities: [vuln('High')] }), NO_LIST, NOW).allow, false, 'the child itself is judged');
});

t.test('content trust: cosign and notation on the exact digest', async (t) => {
  const cosign = project({ enable_content_trust_cosign: 'true' });
  const notation = project({ enable_content_trust: 'true' });
  const both = project({ enable_content_trust_cosign: 'true', enable_content_trust: 'true' });
  const NOT_COSIGN = { allow: false, reason: 'cosign', message: 'The image is not signed by cosign.' };
  const NOT_NOTATION = { allow: false, reason: 'notation', message: 'The image is not signed by notation.' };

  t.same(evaluate(cosign, facts(), NO_LIST, NOW), NOT_COSIGN);
  t.same(evaluate(cosign, facts({ accessories: ['signature.cosign'] }), NO_LIST, NOW), { allow: true });
  t.same(evaluate(cosign, facts({ accessories: ['signature.notation'] }), NO_LIST, NOW), NOT_COSIGN, 'the other kind does not count');
  t.same(evaluate(notation, facts({ accessories: ['signature.notation'] }), NO_LIST, NOW), { allow: true });
  t.same(evaluate(notation, facts({ accessories: ['signature.cosign'] }), NO_LIST, NOW), NOT_NOTATION);

  t.same(evaluate(both, facts(), NO_LIST, NOW), NOT_COSIGN, 'both required: cosign is checked first');
  t.same(evaluate(both, facts({ accessories: ['signature.cosign'] }), NO_LIST, NOW), NOT_NOTATION);
  t.same(evaluate(both, facts({ accessories: ['signature.notation'] }), NO_LIST, NOW), NOT_COSIGN);
  t.same(evaluate(both, facts({ accessories: ['signature.cosign', 'signature.notation'] }), NO_LIST, NOW), { allow: true });

  t.test('a signature on the index only', async (t) => {
    const idx = facts({ isIndex: true, mediaType: 'application/vnd.oci.image.index.v1+json', accessories: ['signature.cosign'] });
    const child = facts({ digest: 'sha256:' + 'c'.repeat(64) });
    t.same(evaluate(cosign, idx, NO_LIST, NOW), { allow: true }, 'the index pulls');
    t.same(evaluate(cosign, child, NO_LIST, NOW), NOT_COSIGN, 'its child by digest does not');
  });

  t.test('content trust is judged before vulnerabilities', async (t) => {
    const p = project({ enable_content_trust_cosign: 'true', ...vul('low') });
    t.same(evaluate(p, facts({ vulnerabilities: [vuln('Critical')] }), NO_LIST, NOW), NOT_COSIGN);
    t.equal(evaluate(p, facts({ accessories: ['signature.cosign'], vulnerabilities: [vuln('Critical')] }), NO_LIST, NOW).allow, false, 'signed but vulnerable');
    t.match(evaluate(p, facts({ accessories: ['signature.cosign'], vulnerabilities: [vuln('Critical')] }), NO_LIST, NOW), { reason: 'vuln-severity' });
  });
});

t.test('a signature artifact itself is exempt from every check', async (t) => {
  const strict = project({ enable_content_trust_cosign: 'true', enable_content_trust: 'true', ...vul('none') });
  const sig = facts({ isSignature: true, scanStatus: null, type: 'UNKNOWN' });
  t.same(evaluate(strict, sig, NO_LIST, NOW), { allow: true });
  t.same(evaluate(strict, facts({ isSignature: true, vulnerabilities: [vuln('Critical')], scanStatus: 'Error' }), NO_LIST, NOW), { allow: true });
});

t.test('artifacts unknown to the snapshot', async (t) => {
  const open = project({ public: 'true', severity: 'critical' });
  t.equal(projectEnforces(open), false);
  t.same(evaluate(open, undefined, NO_LIST, NOW), { allow: true }, 'no policy on: no facts needed');
  for (const meta of [vul('critical'), { enable_content_trust_cosign: 'true' }, { enable_content_trust: '1' }]) {
    const p = project(meta);
    t.equal(projectEnforces(p), true);
    t.match(evaluate(p, undefined, NO_LIST, NOW), { allow: false, reason: 'unknown-artifact', message: /not known to this mirror/ }, JSON.stringify(meta));
  }
});

t.test('artifactFacts reads Harbor\'s artifact and report the way the pull check does', async (t) => {
  const art = {
    type: 'IMAGE',
    digest: D,
    media_type: 'application/vnd.oci.image.config.v1+json',
    manifest_media_type: 'application/vnd.docker.distribution.manifest.list.v2+json',
    addition_links: { vulnerabilities: { href: '/x' } },
    scan_overview: {
      [REPORT_MIME.generic]: { scan_status: 'Running' },
      [REPORT_MIME.native]: { scan_status: 'Success' },
    },
    accessories: [
      { digest: 'sha256:' + 'b'.repeat(64), type: 'signature.notation' },
      { digest: 'sha256:' + 'c'.repeat(64), type: 'sbom.harbor' },
      { digest: 'sha256:' + 'd'.repeat(64), type: 'signature.cosign' },
      { digest: 'sha256:' + 'e'.repeat(64), type: 'signature.cosign' },
    ],
  };
  const items = [
    { id: 'CVE-2', package: 'b', version: '1', severity: 'Low', fix_version: '2' },
    { id: 'CVE-1', package: 'a', version: '1', severity: 'High' },
    { id: 'CVE-2', package: 'b', version: '1', severity: 'Low' },
  ];
  const f = artifactFacts('edge', 'team/app', art, items);
  t.same(f, {
    project: 'edge',
    repository: 'team/app',
    digest: D,
    type: 'IMAGE',
    mediaType: 'application/vnd.docker.distribution.manifest.list.v2+json',
    isIndex: true,
    scannable: true,
    scanStatus: 'Success',
    vulnerabilities: [
      { id: 'CVE-1', package: 'a', version: '1', severity: 'High' },
      { id: 'CVE-2', package: 'b', version: '1', severity: 'Low' },
    ],
    accessories: ['signature.cosign', 'signature.notation'],
    isSignature: false,
  }, 'native report first (GetVulnerable order), items de-duplicated and sorted, signature types only');
  const bare = artifactFacts('edge', 'app', { type: 'IMAGE', digest: D, manifest_media_type: 'application/vnd.oci.image.manifest.v1+json' }, items);
  t.same([bare.scannable, bare.scanStatus, bare.vulnerabilities, bare.accessories, bare.isIndex], [false, null, [], [], false]);
  const running = artifactFacts('edge', 'app', { ...art, scan_overview: { [REPORT_MIME.generic]: { scan_status: 'Running' } } }, items);
  t.same([running.scanStatus, running.vulnerabilities], ['Running', []], 'no list unless the scan succeeded');
  const statusless = artifactFacts('edge', 'app', { ...art, scan_overview: { [REPORT_MIME.generic]: {} } }, []);
  t.equal(statusless.scanStatus, 'Error', 'a report without a status is an Error report');
  const otherMime = artifactFacts('edge', 'app', { ...art, scan_overview: { 'application/vnd.other': { scan_status: 'Success' } } }, []);
  t.equal(otherMime.scanStatus, null, 'a report type Harbor\'s check does not read is no report');

  t.equal(signatureTypeOf({ media_type: 'application/vnd.dev.cosign.artifact.sig.v1+json' }), 'signature.cosign');
  t.equal(signatureTypeOf({ artifact_type: 'application/vnd.cncf.notary.signature' }), 'signature.notation');
  t.equal(signatureTypeOf({ media_type: 'application/vnd.oci.image.config.v1+json', tags: [{ name: `sha256-${'a'.repeat(64)}.sig` }] }), 'signature.cosign');
  t.equal(signatureTypeOf({ media_type: 'application/vnd.oci.image.config.v1+json', tags: [{ name: 'latest' }] }), null);
});

t.test('decide: snapshot entry, per-project staleness and on_expired', async (t) => {
  const edge = project({ ...vul('high'), enable_content_trust_cosign: 'true' });
  const open = normaliseProject({ project_id: 8, name: 'open', metadata: { public: 'true' } });
  const clean = facts({ accessories: ['signature.cosign'] });
  const bad = facts({ digest: 'sha256:' + 'b'.repeat(64), accessories: ['signature.cosign'], vulnerabilities: [vuln('Critical')] });
  const HOUR = 3_600_000;
  const snapshot: PolicySnapshot = {
    syncedAt: NOW,
    systemAllowlist: NO_LIST,
    projects: { edge, open },
    artifacts: { [artifactKey('edge', 'app', clean.digest)]: clean, [artifactKey('edge', 'app', bad.digest)]: bad },
    projectSyncedAt: { edge: NOW, open: NOW - 100 * HOUR },
  };
  const base = { snapshot, project: 'edge', repository: 'app', now: NOW + HOUR, offlineGraceMs: 72 * HOUR, onExpired: 'deny' as const };

  t.same(decide({ ...base, digest: clean.digest }), { allow: true });
  t.match(decide({ ...base, digest: bad.digest }), { allow: false, reason: 'vuln-severity' });
  t.match(decide({ ...base, digest: D.replace('a', 'f') }), { allow: false, reason: 'unknown-artifact' });
  t.same(decide({ ...base, digest: 'sha256:' + 'f'.repeat(64), facts: { ...clean, digest: 'sha256:' + 'f'.repeat(64) } }), { allow: true }, 'fresh online facts are used');
  t.match(decide({ ...base, repository: 'other', digest: clean.digest }), { reason: 'unknown-artifact' }, 'facts are per repository');
  t.match(decide({ ...base, project: 'nope', digest: clean.digest }), { allow: false, reason: 'unknown-project', message: /project 'nope' is not known/ });
  t.match(decide({ ...base, snapshot: null, digest: clean.digest }), { reason: 'unknown-project' });

  const late = { ...base, now: NOW + 73 * HOUR };
  t.match(decide({ ...late, digest: clean.digest }), { allow: false, reason: 'policy-expired', message: /last synced from Harbor 73h00m ago, longer than the allowed 72h00m/ });
  t.same(decide({ ...late, onExpired: 'allow', digest: clean.digest }), { allow: true }, 'allow: the expiry refuses nothing');
  t.match(decide({ ...late, onExpired: 'allow', digest: bad.digest }), { allow: false, reason: 'vuln-severity' }, 'the last known policy still holds');
  t.match(decide({ ...base, project: 'open', digest: clean.digest }), { allow: false, reason: 'policy-expired' }, 'staleness is per project, policy or not');
  t.same(decide({ ...base, now: NOW + 72 * HOUR, digest: clean.digest }), { allow: true }, 'exactly at the grace is still fresh');
});

t.test('Harbor paths split into project and repository', async (t) => {
  t.same(splitHarborName('edge/team/app'), { project: 'edge', repository: 'team/app' });
  t.same(splitHarborName('edge/app'), { project: 'edge', repository: 'app' });
  t.equal(splitHarborName('app'), null, 'no project part');
  t.equal(splitHarborName('/app'), null);
  t.equal(splitHarborName('edge/'), null);
  t.equal(artifactKey('edge', 'team/app', D), `edge/team/app@${D}`);
});
