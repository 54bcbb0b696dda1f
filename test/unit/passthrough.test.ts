import t from 'tap';
import { PassThrough } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { passThrough } from '../../src/cache/passthrough.js';
import { sha256 } from '../../src/oci/digest.js';

function answer(data: Buffer, chunk = 1000) {
  const body = new PassThrough();
  (async () => {
    for (let i = 0; i < data.length; i += chunk) body.write(data.subarray(i, i + chunk));
    body.end();
  })();
  return { status: 200 as const, offset: 0, size: data.length, body };
}

async function collect(r: NodeJS.ReadableStream): Promise<{ data: Buffer; error?: Error }> {
  const chunks: Buffer[] = [];
  try {
    for await (const c of r) chunks.push(c as Buffer);
    return { data: Buffer.concat(chunks) };
  } catch (error) {
    return { data: Buffer.concat(chunks), error: error as Error };
  }
}

t.test('streams exact bytes and ranges of a verified blob', async (t) => {
  const data = randomBytes(10_500);
  const d = sha256(data);
  t.same((await collect(passThrough(answer(data), d, data.length, 0, data.length - 1))).data, data);
  t.same((await collect(passThrough(answer(data), d, data.length, 999, 2001))).data, data.subarray(999, 2002), 'a range across chunk borders');
  t.same((await collect(passThrough(answer(data), d, data.length, 10_000, 10_499))).data, data.subarray(10_000));
});

t.test('a wrong byte never completes: the last piece is held until the digest matches', async (t) => {
  const data = randomBytes(10_000);
  const d = sha256(data);
  const bad = Buffer.from(data);
  bad.writeUInt8(bad.readUInt8(9_999) ^ 1, 9_999);
  const r = await collect(passThrough(answer(bad), d, data.length, 0, data.length - 1));
  t.ok(r.error, 'an error');
  t.ok(r.data.length < data.length, `truncated (${r.data.length} bytes)`);
  const early = await collect(passThrough(answer(bad), d, data.length, 0, 99));
  t.ok(early.error && early.data.length < 100, 'even a range that ends before the bad byte waits for the whole blob to verify');
});
