/**
 * Reading the Kubernetes and Prometheus YAML the project ships, for the
 * packaging and monitoring tests: documents parsed through python3-yaml
 * (no YAML library in node_modules), a safe walk into them, and a container's
 * environment as the kubelet makes it.
 */
import { execFile } from 'node:child_process';

function python(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('python3', args, { timeout: 120_000, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** A skip reason when python3-yaml is missing, else false (for tap's `skip`). */
export const NO_YAML: false | string = (await python(['-c', 'import yaml'])).code === 0 ? false : 'python3-yaml is not installed';

/** Every document of a YAML file, as JSON values; a file that does not parse throws. */
export async function yamlDocs(file: string): Promise<unknown[]> {
  const res = await python(['-c', 'import sys, json, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))', file]);
  if (res.code !== 0) throw new Error(`${file} does not parse as YAML: ${res.stderr}`);
  return JSON.parse(res.stdout) as unknown[];
}

/** Walks parsed YAML: at(doc, 'spec', 'template', 0) is undefined wherever a step is missing. */
export function at(value: unknown, ...keys: Array<string | number>): unknown {
  let v = value;
  for (const k of keys) {
    if (typeof v !== 'object' || v === null) return undefined;
    v = (v as Record<string | number, unknown>)[k];
  }
  return v;
}

export const list = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);

/**
 * A container's environment as the kubelet makes it: fieldRef values from `downward`, and
 * $(NAME) in a value replaced by a variable defined earlier in the list (left as it is otherwise).
 */
export function containerEnv(container: unknown, downward: Record<string, string>): Record<string, string> {
  const env: Record<string, string> = {};
  for (const e of list(at(container, 'env'))) {
    const name = String(at(e, 'name'));
    const field = at(e, 'valueFrom', 'fieldRef', 'fieldPath');
    env[name] = typeof field === 'string' ? (downward[field] ?? `<no ${field}>`) : String(at(e, 'value')).replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (ref: string, v: string) => env[v] ?? ref);
  }
  return env;
}
