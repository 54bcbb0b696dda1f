/**
 * The environment variables the kubelet gives every pod of a namespace for
 * each Service in it ("service links", on unless a pod sets
 * enableServiceLinks: false), written the way kubelet's
 * pkg/kubelet/envvars/envvars.go (FromServices, makeLinkVariables) does:
 * the Service name upper-cased with dashes turned into underscores, then
 *
 *   <NAME>_SERVICE_HOST, <NAME>_SERVICE_PORT (the first port),
 *   <NAME>_SERVICE_PORT_<PORTNAME> for each named port,
 *   <NAME>_PORT (the first port, Docker-link style),
 *   <NAME>_PORT_<port>_<PROTO>, and its _PROTO, _PORT and _ADDR.
 */
export interface ServicePort {
  name?: string;
  port: number;
  protocol?: 'TCP' | 'UDP' | 'SCTP';
}

function envName(s: string): string {
  return s.replaceAll('-', '_').toUpperCase();
}

export function serviceLinkEnv(service: string, clusterIp: string, ports: readonly ServicePort[]): Record<string, string> {
  const prefix = envName(service);
  const env: Record<string, string> = {};
  env[`${prefix}_SERVICE_HOST`] = clusterIp;
  env[`${prefix}_SERVICE_PORT`] = String(ports[0]!.port);
  for (const p of ports) if (p.name) env[`${prefix}_SERVICE_PORT_${envName(p.name)}`] = String(p.port);
  ports.forEach((p, i) => {
    const proto = p.protocol ?? 'TCP';
    const url = `${proto.toLowerCase()}://${clusterIp}:${p.port}`;
    if (i === 0) env[`${prefix}_PORT`] = url;
    const portPrefix = `${prefix}_PORT_${p.port}_${proto}`;
    env[portPrefix] = url;
    env[`${portPrefix}_PROTO`] = proto.toLowerCase();
    env[`${portPrefix}_PORT`] = String(p.port);
    env[`${portPrefix}_ADDR`] = clusterIp;
  });
  return env;
}

/**
 * What a pod in a namespace with Services named berth, berth-peers and
 * berth-server (ports 5050 and 5051), plus berth-harbor, berth-cache and
 * berth-upstream (names that start like a config section), is given.
 */
export function berthServiceLinks(): Record<string, string> {
  const ports: ServicePort[] = [
    { name: 'registry', port: 5050 },
    { name: 'peers', port: 5051 },
  ];
  return {
    ...serviceLinkEnv('berth', '10.152.183.7', ports),
    ...serviceLinkEnv('berth-peers', '10.152.183.8', ports),
    ...serviceLinkEnv('berth-server', '10.152.183.9', ports),
    ...serviceLinkEnv('berth-harbor', '10.152.183.10', [{ port: 443 }]),
    ...serviceLinkEnv('berth-cache', '10.152.183.11', [{ port: 5050 }]),
    ...serviceLinkEnv('berth-upstream', '10.152.183.12', [{ name: 'http', port: 80 }]),
  };
}
