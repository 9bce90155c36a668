/** Moved to the pure core: `core/plan.ts`. This path keeps existing imports working. */
export * from '../core/plan.js';
