// A confusion matrix as an SVG heat map: rows are the true classes, columns the predicted ones, each cell shaded
// by its share of the row (so that per-class recall reads along the diagonal) and labelled with its count.
import { escapeXml } from './plots.ts';

export function confusionSvg(confusion: number[][], title: string): string {
  const k = confusion.length,
    cell = 40,
    left = 70,
    top = 60,
    size = k * cell;
  const width = left + size + 20,
    height = top + size + 50;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="#fff"/>`,
    `<text x="${width / 2}" y="20" text-anchor="middle" font-size="14">${escapeXml(title)}</text>`,
    `<text x="${left + size / 2}" y="${top - 25}" text-anchor="middle">predicted class</text>`,
    `<text x="18" y="${top + size / 2}" text-anchor="middle" transform="rotate(-90 18 ${top + size / 2})">true class</text>`,
  ];
  for (let t = 0; t < k; t++) {
    const row = confusion[t].reduce((s, v) => s + v, 0);
    parts.push(`<text x="${left - 8}" y="${top + t * cell + cell / 2 + 4}" text-anchor="end">${t}</text>`);
    parts.push(`<text x="${left + t * cell + cell / 2}" y="${top - 8}" text-anchor="middle">${t}</text>`);
    for (let p = 0; p < k; p++) {
      const v = confusion[t][p],
        share = row ? v / row : 0;
      const shade = Math.round(255 - 200 * share);
      const fill = t === p ? `rgb(${shade},${Math.round(255 - 90 * share)},${shade})` : `rgb(255,${shade},${shade})`;
      const x = left + p * cell,
        y = top + t * cell;
      parts.push(
        `<rect x="${x}" y="${y}" width="${cell}" height="${cell}" fill="${fill}" stroke="#ddd"><title>true ${t}, predicted ${p}: ${v}</title></rect>`,
      );
      if (v)
        parts.push(
          `<text x="${x + cell / 2}" y="${y + cell / 2 + 4}" text-anchor="middle" font-size="${v >= 1000 ? 10 : 12}">${v}</text>`,
        );
    }
  }
  parts.push(
    `<text x="${left}" y="${top + size + 30}">cells shaded by their share of the true class's row</text>`,
    '</svg>',
  );
  return `${parts.join('\n')}\n`;
}
