import type { Command } from './command.js';
import { EXIT, UsageError, out, err } from './command.js';
import { COMMON_FLAGS, checkImageArgs, configFrom, parse, platformsFrom, withRuntime } from './common.js';
import { prefetchImage, type PrefetchResult } from '../cache/prefetch.js';
import { formatSize } from '../config/units.js';
import { Progress } from './progress.js';

const OPTIONS = { ...COMMON_FLAGS, platform: { type: 'string', multiple: true }, 'all-platforms': { type: 'boolean' }, 'no-pin': { type: 'boolean' }, concurrency: { type: 'string' } } as const;

export const prefetchCommand: Command = {
  name: 'prefetch',
  options: OPTIONS,
  summary: 'pull images into the cache ahead of need and pin them',
  help: `Usage: berth prefetch [IMAGE...] [--platform OS/ARCH]... [--all-platforms] [--no-pin]
                      [--concurrency N] [--json]

Resolves each image (a tag or a digest; docker.io is assumed without a
registry), fetches every manifest and blob of the chosen platforms into the
cache with bounded concurrency, and pins the image so eviction keeps it.
With no IMAGE: the [[prefetch]] list of the configuration, each with its own
platforms, plus the images Harbor marks for the site ([harbor]
prefetch_labels, and its projects' enabled preheat policies). Works while the
daemon runs on the same cache.

Options:
  --platform P      a platform to fetch from an index (repeatable; default:
                    the [[prefetch]] entry's, else this node's, e.g. linux/amd64)
  --all-platforms   every platform an index offers
  --no-pin          fill the cache without pinning
  --concurrency N   parallel blob transfers (default 4)
  --json            print the results as JSON
  -v, --verbose     log progress lines to stderr
  --config FILE     configuration file
  -h, --help        show this help

Exit 0 when every image was fetched, 1 if any failed (the others still are).
`,
  async run(argv) {
    const { values, positionals } = parse(argv, OPTIONS, true);
    checkImageArgs(positionals);
    platformsFrom(values.platform); // a malformed --platform is bad usage before anything is opened
    const config = configFrom(values.config);
    const concurrency = values.concurrency === undefined ? 4 : Number(values.concurrency);
    if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 64) throw new UsageError('--concurrency takes a whole number from 1 to 64');
    return withRuntime(config, values.verbose === true, async (rt) => {
      const jobs = positionals.length > 0
        ? positionals.map((image) => ({ image, platforms: platformsFrom(values.platform) }))
        : [
            ...config.prefetch.map((p) => ({ image: p.image, platforms: platformsFrom(values.platform, p.platforms) })),
            ...(rt.gate ? await rt.gate.markedImages() : []).map((image) => ({ image, platforms: platformsFrom(values.platform) })),
          ];
      if (jobs.length === 0) throw new UsageError('no IMAGE given, no [[prefetch]] in the configuration, and nothing Harbor marks for this site');
      const results: (PrefetchResult | { image: string; error: string })[] = [];
      for (const job of jobs) {
        const progress = new Progress();
        try {
          const r = await prefetchImage(rt.mirror, rt.index.pins, rt.logger, job.image, {
            platforms: job.platforms,
            allPlatforms: values['all-platforms'] === true,
            concurrency,
            pin: values['no-pin'] !== true,
            onProgress: (p) => progress.line(p.image, p.blobsDone, p.blobsTotal, p.bytesDone, p.bytesTotal),
          });
          progress.end();
          results.push(r);
          if (!values.json) out(`${r.image}@${r.digest}  ${r.blobs} blobs, ${formatSize(r.bytes)} (${formatSize(r.fetchedBytes)} fetched)  ${r.platforms.join(', ')}${values['no-pin'] ? '' : '  pinned'}`);
        } catch (e) {
          progress.end();
          const message = e instanceof Error ? e.message : String(e);
          results.push({ image: job.image, error: message });
          if (!values.json) err(`${job.image}: ${message}`);
        }
      }
      if (values.json) out(JSON.stringify(results, null, 2));
      return results.some((r) => 'error' in r) ? EXIT.failure : EXIT.ok;
    });
  },
};
