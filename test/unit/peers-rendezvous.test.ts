/**
 * Rendezvous hashing: the same order on every node, an even share per member, and the minimum of
 * movement when a member leaves or joins. The digests are fixed (hashes of a counter), so the
 * shares are the same on every run: the bounds are generous, and never flaky.
 */
import { createHash } from 'node:crypto';
import t from 'tap';
import { owner, rankMembers, weight } from '../../src/peers/rendezvous.js';

const DIGESTS = Array.from({ length: 3000 }, (_, i) => 'sha256:' + createHash('sha256').update(`blob ${i}`).digest('hex'));
const THREE = ['10.0.0.11:5051', '10.0.0.12:5051', '10.0.0.13:5051'];
const FOUR = [...THREE, '10.0.0.14:5051'];

function owners(members: readonly string[]): Map<string, string> {
  return new Map(DIGESTS.map((d) => [d, owner(d, members)!]));
}

function shares(map: Map<string, string>): Map<string, number> {
  const count = new Map<string, number>();
  for (const m of map.values()) count.set(m, (count.get(m) ?? 0) + 1);
  return count;
}

t.test('the order is deterministic and independent of the input order', async (t) => {
  const d = DIGESTS[0]!;
  const ranked = rankMembers(d, THREE);
  t.equal(ranked.length, 3);
  t.same([...ranked].sort(), [...THREE].sort(), 'a permutation of the members');
  t.same(rankMembers(d, [...THREE].reverse()), ranked, 'input order does not matter');
  t.same(rankMembers(d, [THREE[1]!, THREE[0]!, THREE[2]!]), ranked);
  t.same(rankMembers(d, [...THREE, THREE[0]!]), ranked, 'a duplicate counts once');
  t.equal(owner(d, THREE), ranked[0]);
  t.equal(owner(d, []), undefined);
  t.same(rankMembers(d, []), []);
  t.equal(typeof weight(d, THREE[0]!), 'bigint');
  t.equal(weight(d, THREE[0]!), createHash('sha256').update(`${THREE[0]}\0${d}`).digest().readBigUInt64BE(0), 'the documented weight');
  // Different digests give different orders (otherwise one node would own everything).
  const firsts = new Set(DIGESTS.slice(0, 50).map((x) => rankMembers(x, THREE).join(',')));
  t.ok(firsts.size >= 4, `several orders among 50 digests (${firsts.size})`);
});

t.test('owner agrees with the head of rankMembers', async (t) => {
  let agree = 0;
  for (const d of DIGESTS) if (owner(d, FOUR) === rankMembers(d, FOUR)[0]) agree++;
  t.equal(agree, DIGESTS.length);
});

t.test('every member owns roughly a third', async (t) => {
  const count = shares(owners(THREE));
  t.equal(count.size, 3);
  for (const m of THREE) {
    const share = (count.get(m) ?? 0) / DIGESTS.length;
    t.ok(share > 0.2 && share < 0.5, `${m} owns ${(share * 100).toFixed(1)}%`);
  }
});

t.test('removing a member moves only the digests it owned, each to its runner-up', async (t) => {
  const before = owners(THREE);
  const gone = THREE[1]!;
  const left = THREE.filter((m) => m !== gone);
  let moved = 0;
  const wrong: string[] = [];
  for (const d of DIGESTS) {
    const was = before.get(d)!;
    const now = owner(d, left)!;
    if (was === gone) {
      moved++;
      if (now !== rankMembers(d, THREE)[1]) wrong.push(`${d} went to ${now}, not its runner-up`);
    } else if (now !== was) {
      wrong.push(`${d} moved from ${was} to ${now} though its owner stayed`);
    }
    // The rest of the order is the old order without the member that left.
    const expected = rankMembers(d, THREE).filter((m) => m !== gone);
    if (rankMembers(d, left).join() !== expected.join()) wrong.push(`${d}: order changed beyond the removal`);
  }
  t.same(wrong, [], 'every digest of a staying owner kept it, every other went to its runner-up');
  t.ok(moved > 0, `the leaver's ${moved} digests moved`);
});

t.test('a member joining takes only from the others, and from each about equally', async (t) => {
  const before = owners(THREE);
  const after = owners(FOUR);
  const joined = FOUR[3]!;
  const takenFrom = new Map<string, number>();
  const wrong: string[] = [];
  for (const d of DIGESTS) {
    const was = before.get(d)!;
    const now = after.get(d)!;
    if (now === was) continue;
    if (now !== joined) wrong.push(`${d} moved from ${was} to ${now}, an old member`);
    takenFrom.set(was, (takenFrom.get(was) ?? 0) + 1);
  }
  t.same(wrong, [], 'digests moved only to the newcomer');
  const taken = [...takenFrom.values()].reduce((a, b) => a + b, 0);
  t.ok(taken / DIGESTS.length > 0.15 && taken / DIGESTS.length < 0.35, `the newcomer took ${taken} (about a quarter)`);
  const owned = shares(before);
  for (const m of THREE) {
    // Each old member loses about a quarter of what it had.
    const lost = (takenFrom.get(m) ?? 0) / owned.get(m)!;
    t.ok(lost > 0.1 && lost < 0.4, `${m} lost ${(lost * 100).toFixed(1)}% of its digests`);
  }
});
