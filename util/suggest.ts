// "Did you mean ...?" for a mistyped name: the closest candidate within a small edit distance.

/** Optimal string alignment distance: insertions, deletions, substitutions and swaps of neighbours. */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
      const swapped = i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1];
      if (swapped) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.length][b.length];
}

/**
 * The candidate closest to `name`: within 2 edits (1 for names of 4 characters or fewer), or the only
 * candidate that starts with it; undefined when nothing is close.
 */
export function closest(name: string, candidates: readonly string[]): string | undefined {
  const limit = name.length <= 4 ? 1 : 2;
  let best: string | undefined,
    bestDistance = Infinity;
  for (const c of candidates) {
    const dist = editDistance(name, c);
    if (dist <= limit && dist < bestDistance) {
      best = c;
      bestDistance = dist;
    }
  }
  if (best !== undefined) return best;
  const prefixed = name.length >= 3 ? candidates.filter(c => c.startsWith(name)) : [];
  return prefixed.length === 1 ? prefixed[0] : undefined;
}
