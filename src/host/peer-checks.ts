/**
 * Site peers seen from outside the daemon. `berth status` and `berth doctor` run in another
 * process than `berth serve`, so they cannot read its circuits; what they can say honestly is
 * who the config names as members and what each member answers to the request the daemon would
 * send. One file per family of checks:
 * - peer-checks/listing.ts: the members, read with the daemon's own sources and rules;
 * - peer-checks/probe.ts: each member's answer to a signed (and an unsigned) GET /v2/, its clock;
 * - peer-checks/local.ts: this node's key file and [peers] listen address;
 * - peer-checks/doctor.ts: the findings `berth doctor` prints from all of the above.
 */
export { describeSource, listSite, type ListOptions, type SiteListing } from './peer-checks/listing.js';
export { describeSkew, probePeers, siteKeyOrError, type PeerProbe, type ProbeOptions } from './peer-checks/probe.js';
export { listenFinding } from './peer-checks/local.js';
export { CLOCK_WARN_MS, peerFindings, type PeerFindingOptions } from './peer-checks/doctor.js';
