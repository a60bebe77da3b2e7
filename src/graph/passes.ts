// Graph passes: identity elimination, constant folding, dead-node removal (filled in below).
import type { Model } from './ir.js';

export function optimizeGraph(_model: Model): void {
  // Passes land in the next commit.
}
