/** Moved to the pure core: `core/admission.ts`. This path keeps existing imports working. */
export * from './core/admission.js';
